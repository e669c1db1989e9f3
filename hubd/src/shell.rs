//! Interactive shells relayed by the hub, and their recordings.

pub mod recording;
