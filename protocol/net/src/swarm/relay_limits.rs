//! What a circuit-relay v2 server allows: operators' peers relay for users behind NATs, and
//! a relay must serve chat (a circuit per relayed contact, again every few minutes) while no
//! stranger holds all of it.

use std::{num::NonZeroU32, time::Duration};

/// Limits of a circuit-relay v2 server.
#[derive(Clone, Debug)]
pub struct RelayLimits {
    /// Most reservations held at once.
    pub max_reservations: usize,
    /// Most circuits relayed at once.
    pub max_circuits: usize,
    /// Longest a circuit may last.
    pub max_circuit_duration: Duration,
    /// Most bytes one circuit may carry.
    pub max_circuit_bytes: u64,
    /// Most circuits a peer may take part in (as source or destination) when it asks for
    /// another; rust-libp2p lets one more through than this.
    pub max_circuits_per_peer: usize,
    /// Circuits one source peer may open per minute (also the burst).
    pub circuits_per_peer_per_minute: u32,
    /// Circuits one source IP address may open per minute (also the burst): many users sit
    /// behind one carrier NAT.
    pub circuits_per_ip_per_minute: u32,
}

impl Default for RelayLimits {
    /// Sized for chat: rust-libp2p's defaults (16 circuits in all, then one new circuit per
    /// source peer every 2 minutes once a burst of 30 is spent) suit volunteer relays of a
    /// file-sharing network; a user whose contacts sit behind symmetric NATs needs a circuit
    /// per contact, again every `max_circuit_duration`, and every restart spends more. In
    /// the NAT lab the old limits refused a restarted user's circuits ("resource limit
    /// exceeded") from the fourth round on.
    fn default() -> Self {
        RelayLimits {
            max_reservations: 1024,
            max_circuits: 1024,
            max_circuit_duration: Duration::from_secs(120),
            max_circuit_bytes: 1 << 20,
            max_circuits_per_peer: 16,
            circuits_per_peer_per_minute: 60,
            circuits_per_ip_per_minute: 600,
        }
    }
}

impl RelayLimits {
    /// rust-libp2p's relay configuration for these limits. A per-minute rate becomes a
    /// bucket of that many tokens refilled one per `60 s / rate`.
    pub(super) fn to_libp2p(&self) -> libp2p::relay::Config {
        fn bucket(per_minute: u32) -> (NonZeroU32, Duration) {
            let per_minute = NonZeroU32::new(per_minute).unwrap_or(NonZeroU32::MIN);
            (per_minute, Duration::from_secs(60) / per_minute.get())
        }
        let (peer_burst, peer_every) = bucket(self.circuits_per_peer_per_minute);
        let (ip_burst, ip_every) = bucket(self.circuits_per_ip_per_minute);
        let defaults = libp2p::relay::Config::default();
        libp2p::relay::Config {
            max_reservations: self.max_reservations,
            max_circuits: self.max_circuits,
            max_circuits_per_peer: self.max_circuits_per_peer,
            max_circuit_duration: self.max_circuit_duration,
            max_circuit_bytes: self.max_circuit_bytes,
            circuit_src_rate_limiters: Vec::new(),
            reservation_rate_limiters: Vec::new(),
            ..defaults
        }
        .circuit_src_per_peer(peer_burst, peer_every)
        .circuit_src_per_ip(ip_burst, ip_every)
        // Per peer, libp2p's (a burst of 30, then one every 2 minutes: a node reserves once
        // per start); per IP address, the circuits' rate (one carrier NAT, many users).
        .reservation_rate_per_peer(
            NonZeroU32::new(30).unwrap_or(NonZeroU32::MIN),
            Duration::from_secs(120),
        )
        .reservation_rate_per_ip(ip_burst, ip_every)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Defect: rust-libp2p's defaults (16 circuits, one new circuit per source peer every
    /// 2 minutes after a burst of 30) refused a restarted user's circuits in the NAT lab.
    #[test]
    fn the_relay_gets_our_limits_and_rates_not_libp2ps() {
        let limits = RelayLimits::default();
        let config = limits.to_libp2p();
        assert_eq!(config.max_circuits, limits.max_circuits);
        assert_eq!(config.max_circuits_per_peer, limits.max_circuits_per_peer);
        assert_eq!(config.max_reservations, limits.max_reservations);
        assert_eq!(config.max_circuit_bytes, limits.max_circuit_bytes);
        assert_eq!(config.max_circuit_duration, limits.max_circuit_duration);
        // Ours only (per peer and per IP), none of libp2p's left beside them.
        assert_eq!(config.circuit_src_rate_limiters.len(), 2);
        assert_eq!(config.reservation_rate_limiters.len(), 2);
        assert!(limits.max_circuits > libp2p::relay::Config::default().max_circuits);
        // A zero rate is read as one per minute, never a panic (libp2p asserts a non-zero
        // refill interval).
        let zero = RelayLimits {
            circuits_per_peer_per_minute: 0,
            circuits_per_ip_per_minute: 0,
            ..RelayLimits::default()
        };
        assert_eq!(zero.to_libp2p().circuit_src_rate_limiters.len(), 2);
    }
}
