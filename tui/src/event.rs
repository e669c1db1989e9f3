//! What the console reacts to: keys, hub news, and the clock.

use crossterm::event::KeyEvent;
use flotilla_wire::msg::{AgentInfo, FleetEvent, MetricsSeries, Welcome};

/// Something happened.
#[derive(Debug)]
pub enum Event {
    /// A key was pressed.
    Key(KeyEvent),
    /// The terminal was resized.
    Resize,
    /// The hub accepted us.
    Connected(Box<Welcome>),
    /// A fleet event arrived.
    Fleet(Box<FleetEvent>),
    /// The hub went away; the console reconnects by itself.
    Disconnected(String),
    /// One second passed (relative times move on).
    Tick,
    /// Full detail of the agent in view (polled every second while its view is open).
    Detail(Box<AgentInfo>),
    /// History of the agent in view.
    History(Box<MetricsSeries>),
}
