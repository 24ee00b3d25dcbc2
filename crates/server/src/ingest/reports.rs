//! What the agents' own `system` records in a batch report, for the
//! owner's metrics: lines their rate limit held back (`throttled`), lines
//! they dropped (`dropped`, by reason) and their moves from one server to
//! the next (`server_failover`). See the agent's shipper and spool.

use tailwater_model::lifecycle::{field, Event};
use tailwater_model::wire::IngestRecord;
use tailwater_model::Stream;

#[derive(Default)]
pub(super) struct AgentReports {
    pub throttled: u64,
    pub dropped: Vec<(String, u64)>,
    /// Failovers agents told (each `server_failover` record: the first
    /// move after a batch was taken; moves while every server is away are
    /// in the agent's status, not told one by one).
    pub failovers: u64,
}

impl AgentReports {
    pub fn read(&mut self, record: &IngestRecord) {
        if record.stream != Stream::System {
            return;
        }
        let fields = record.fields.to_map();
        let number = |key: &str| fields.get(key).and_then(|value| value.as_u64());
        match Event::of(&fields) {
            Some(Event::Throttled) => self.throttled += number(field::HELD_LINES).unwrap_or(0),
            Some(Event::ServerFailover) => self.failovers += 1,
            Some(Event::Dropped) => {
                // A reason is a metric label: only a short snake_case word
                // (as agents write them) is kept, so series stay few.
                let reason = fields
                    .get(field::REASON)
                    .and_then(|reason| reason.as_str())
                    .filter(|reason| {
                        !reason.is_empty()
                            && reason.len() <= 40
                            && reason.bytes().all(|b| b.is_ascii_lowercase() || b == b'_')
                    })
                    .unwrap_or("other")
                    .to_owned();
                let lines = number(field::DROPPED_LINES).unwrap_or(0);
                match self.dropped.iter_mut().find(|(seen, _)| *seen == reason) {
                    Some((_, total)) => *total += lines,
                    None => self.dropped.push((reason, lines)),
                }
            }
            _ => {}
        }
    }
}
