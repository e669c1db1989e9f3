"""A throwaway sshd on 127.0.0.1 for side-by-side benchmarks (exec_vs_ssh.py, transfer_vs_scp.py).

Its own host key, client key, authorized keys, pid file and configs live in a temp dir. When run as
root it logs in as a throwaway account with a plain /bin/sh and an empty home (shell start-up files
skew latency, as STACK.md warns; root's bash read its rc files on every command); otherwise as the
current user. Everything is removed by `close()`.
"""
import os, shutil, signal, subprocess, tempfile, time


class LocalSshd:
    def __init__(self, port, prefix="sshd-"):
        self.dir = tempfile.mkdtemp(prefix=prefix)
        os.chmod(self.dir, 0o755)
        s = self.dir
        self.user = None
        if os.geteuid() == 0 and shutil.which("useradd"):
            self.user = f"flbench{os.getpid() % 100000}"
            home = f"{s}/home"
            # "*": no password, but not locked (sshd refuses locked accounts even with a key).
            subprocess.run(["useradd", "-M", "-d", home, "-s", "/bin/sh", "-p", "*", self.user], check=True)
            os.makedirs(home)
            shutil.chown(home, self.user, self.user)
            self.home = home
        else:
            self.home = os.path.expanduser("~")
        login = self.user or os.environ.get("USER") or subprocess.run(
            ["id", "-un"], capture_output=True, text=True).stdout.strip()
        for k in ("hk", "ck"):
            subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", f"{s}/{k}"], check=True)
        shutil.copy(f"{s}/ck.pub", f"{s}/authorized_keys")
        os.chmod(f"{s}/authorized_keys", 0o644)
        open(f"{s}/sshd_config", "w").write(f"""Port {port}
ListenAddress 127.0.0.1
HostKey {s}/hk
AuthorizedKeysFile {s}/authorized_keys
PidFile {s}/sshd.pid
StrictModes no
PasswordAuthentication no
KbdInteractiveAuthentication no
UsePAM no
UseDNS no
PrintMotd no
PrintLastLog no
Subsystem sftp /usr/lib/openssh/sftp-server
""")
        open(f"{s}/known_hosts", "w").write(f"[127.0.0.1]:{port} {open(f'{s}/hk.pub').read()}")
        self.config = f"{s}/ssh_config"
        open(self.config, "w").write(f"""Host bench
  HostName 127.0.0.1
  Port {port}
  User {login}
  IdentityFile {s}/ck
  UserKnownHostsFile {s}/known_hosts
  StrictHostKeyChecking yes
  BatchMode yes
""")
        # sshd refuses to start without its privilege-separation directory, which the package
        # creates only when its service starts (never, on a machine where it was just installed).
        if os.geteuid() == 0:
            os.makedirs("/run/sshd", mode=0o755, exist_ok=True)
        self.proc = subprocess.Popen(["/usr/sbin/sshd", "-D", "-f", f"{s}/sshd_config"])
        self.ssh = ["ssh", "-F", self.config]
        deadline = time.monotonic() + 10
        while subprocess.run(self.ssh + ["bench", "true"], capture_output=True).returncode != 0:
            if time.monotonic() > deadline:
                self.close()
                raise RuntimeError("throwaway sshd did not accept a login within 10 s")
            time.sleep(0.05)  # sshd binding its port

    def close(self):
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            self.proc.wait(timeout=30)
        if self.user:
            subprocess.run(["pkill", "-u", self.user], capture_output=True)
            subprocess.run(["userdel", self.user], capture_output=True)
        shutil.rmtree(self.dir, ignore_errors=True)
