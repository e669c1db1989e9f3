//! Compose projects: which tool runs them and with what arguments. The job itself runs like any
//! exec command (output streamed, cancel and timeout kill its process group).
//!
//! Tools, first found wins: Docker's `compose` plugin (`docker compose`), then the standalone
//! `docker-compose`, both pointed at the engine agentd uses with `DOCKER_HOST`; then
//! `podman-compose`, which drives the `podman` command and so Podman's own default storage.

use flotilla_wire::workloads::ComposeAction;
use std::path::{Path, PathBuf};

/// Where Docker looks for CLI plugins, system-wide.
const DOCKER_PLUGIN_DIRS: [&str; 4] = [
    "/usr/local/lib/docker/cli-plugins",
    "/usr/local/libexec/docker/cli-plugins",
    "/usr/lib/docker/cli-plugins",
    "/usr/libexec/docker/cli-plugins",
];

/// A compose tool found on this machine.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ComposeTool {
    /// `docker compose` (the v2 plugin).
    DockerPlugin(PathBuf),
    /// `docker-compose` (standalone, v1 or v2).
    DockerCompose(PathBuf),
    /// `podman-compose`.
    PodmanCompose(PathBuf),
}

impl ComposeTool {
    /// The first tool found in `path` (a `:`-separated search path).
    pub fn find(path: &str) -> Option<Self> {
        let lookup = |name: &str| {
            path.split(':')
                .filter(|d| !d.is_empty())
                .map(|d| Path::new(d).join(name))
                .find(|p| is_executable(p))
        };
        if let Some(docker) = lookup("docker")
            && DOCKER_PLUGIN_DIRS
                .iter()
                .any(|d| is_executable(&Path::new(d).join("docker-compose")))
        {
            return Some(Self::DockerPlugin(docker));
        }
        if let Some(p) = lookup("docker-compose") {
            return Some(Self::DockerCompose(p));
        }
        lookup("podman-compose").map(Self::PodmanCompose)
    }

    /// Program and arguments for `action` on `project`, run inside the project's folder.
    pub fn command(&self, action: ComposeAction, project: &str) -> (PathBuf, Vec<String>) {
        let (program, mut args) = match self {
            Self::DockerPlugin(p) => (p.clone(), vec!["compose".to_string()]),
            Self::DockerCompose(p) | Self::PodmanCompose(p) => (p.clone(), Vec::new()),
        };
        args.extend(["-p".to_string(), project.to_string()]);
        let rest: &[&str] = match action {
            ComposeAction::Up => &["up", "-d"],
            ComposeAction::Down => &["down"],
            ComposeAction::Pull => &["pull"],
            ComposeAction::Restart => &["restart"],
            ComposeAction::Ps => &["ps"],
            ComposeAction::Logs => &["logs", "--no-color"],
        };
        args.extend(rest.iter().map(|s| s.to_string()));
        (program, args)
    }

    /// Whether the tool talks to the engine's API (and so follows `DOCKER_HOST`).
    pub fn uses_docker_host(&self) -> bool {
        !matches!(self, Self::PodmanCompose(_))
    }
}

fn is_executable(p: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

/// The project folder `project` of `compose_dir`, resolved through symlinks and checked to be a
/// folder directly inside it.
pub fn project_dir(compose_dir: &Path, project: &str) -> Result<PathBuf, String> {
    let root = compose_dir
        .canonicalize()
        .map_err(|e| format!("compose_dir {}: {e}", compose_dir.display()))?;
    let dir = root
        .join(project)
        .canonicalize()
        .map_err(|_| format!("no project folder {project} in {}", root.display()))?;
    if dir.parent() != Some(root.as_path()) || !dir.is_dir() {
        return Err(format!(
            "project {project} resolves to {}, not a folder of {}",
            dir.display(),
            root.display()
        ));
    }
    Ok(dir)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commands_name_the_project_and_detach_up() {
        let t = ComposeTool::DockerPlugin("/usr/bin/docker".into());
        assert_eq!(
            t.command(ComposeAction::Up, "web"),
            (
                PathBuf::from("/usr/bin/docker"),
                ["compose", "-p", "web", "up", "-d"]
                    .map(String::from)
                    .to_vec()
            )
        );
        let t = ComposeTool::DockerCompose("/usr/bin/docker-compose".into());
        assert_eq!(
            t.command(ComposeAction::Logs, "web").1,
            ["-p", "web", "logs", "--no-color"]
                .map(String::from)
                .to_vec()
        );
    }

    #[test]
    #[cfg(unix)]
    fn project_folders_stay_inside_compose_dir() {
        let tmp = tempfile::tempdir().expect("tmp");
        let root = tmp.path().join("compose");
        std::fs::create_dir_all(root.join("web")).expect("mkdir");
        std::fs::create_dir_all(tmp.path().join("outside")).expect("mkdir");
        std::os::unix::fs::symlink(tmp.path().join("outside"), root.join("escape")).expect("ln");
        std::fs::write(root.join("file"), "").expect("write");
        let canon = root.canonicalize().expect("canon");
        assert_eq!(project_dir(&root, "web"), Ok(canon.join("web")));
        assert!(
            project_dir(&root, "escape")
                .expect_err("escape")
                .contains("not a folder of")
        );
        assert!(
            project_dir(&root, "file")
                .expect_err("file")
                .contains("not a folder of")
        );
        assert!(
            project_dir(&root, "missing")
                .expect_err("missing")
                .contains("no project folder")
        );
    }
}
