//! A device's store of readings not yet acknowledged: the firmware side of "nothing
//! lost". Pure state, no I/O; the link task drives it.
//!
//! - A reading stays until its PUBACK arrives (in any order); the front is released as
//!   soon as it is acknowledged.
//! - At most `window` readings are in flight (sent, not yet acknowledged).
//! - After a reconnect, every reading that was sent but not acknowledged is sent again,
//!   in order, with DUP set and its original packet identifier, before any new one.
//! - The store is bounded: when it holds `capacity` readings, [`Outbox::try_push`]
//!   refuses the new one. The oldest is never dropped to make room: the producer must
//!   stop producing (a device whose memory is full stops logging), which costs readings
//!   that were never taken, never ones already promised to the service.

use std::collections::{HashMap, VecDeque};

use bytes::Bytes;
use rumqttc::mqttbytes::QoS;
use rumqttc::mqttbytes::v4::Publish;

/// The store is full: the reading was not taken.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("the device's reading store is full ({capacity} readings not yet acknowledged)")]
pub struct OutboxFull {
    pub capacity: usize,
}

#[derive(Clone, Debug)]
struct Entry {
    seq: u64,
    payload: Bytes,
    /// Packet identifier once sent (kept for resends).
    pkid: u16,
    acked: bool,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum PkidUse {
    /// A reading, by its position id (`front_id` + index).
    Reading(u64),
    /// A status message (birth, goodbye): acknowledged, never resent.
    Status,
}

/// What a PUBACK acknowledged.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Acked {
    Reading {
        seq: u64,
    },
    Status,
    /// Not a packet identifier in use (a duplicate or stray PUBACK): ignored.
    Unknown,
}

/// Counters of one outbox.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct OutboxCounters {
    /// Readings taken into the store.
    pub produced: u64,
    /// Readings sent for the first time.
    pub published: u64,
    /// Readings sent again (DUP) after a reconnect.
    pub resent: u64,
    /// Readings acknowledged.
    pub acked: u64,
}

#[derive(Clone, Debug)]
pub struct Outbox {
    topic: String,
    capacity: usize,
    window: usize,
    entries: VecDeque<Entry>,
    /// Position id of `entries[0]`.
    front_id: u64,
    /// `entries[..sent]` were sent at least once (acknowledged or in flight).
    sent: usize,
    in_flight: usize,
    pkids: HashMap<u16, PkidUse>,
    next_pkid: u16,
    counters: OutboxCounters,
}

/// Packet identifiers are 1..=65535; a window must leave room for status messages.
const MAX_WINDOW: usize = 60_000;

impl Outbox {
    pub fn new(topic: String, capacity: usize, window: usize) -> Self {
        Outbox {
            topic,
            capacity: capacity.max(1),
            window: window.clamp(1, MAX_WINDOW),
            entries: VecDeque::new(),
            front_id: 0,
            sent: 0,
            in_flight: 0,
            pkids: HashMap::new(),
            next_pkid: 1,
            counters: OutboxCounters::default(),
        }
    }

    /// Readings held (in flight or waiting).
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    pub fn in_flight(&self) -> usize {
        self.in_flight
    }

    pub fn has_room(&self) -> bool {
        self.entries.len() < self.capacity
    }

    pub fn counters(&self) -> OutboxCounters {
        self.counters
    }

    /// Takes a reading, or refuses it when the store is full.
    pub fn try_push(&mut self, seq: u64, payload: Bytes) -> Result<(), OutboxFull> {
        if !self.has_room() {
            return Err(OutboxFull {
                capacity: self.capacity,
            });
        }
        self.entries.push_back(Entry {
            seq,
            payload,
            pkid: 0,
            acked: false,
        });
        self.counters.produced += 1;
        Ok(())
    }

    /// A new connection: forgets status messages of the old one and returns every
    /// reading sent but not acknowledged, in order, marked DUP.
    pub fn resume(&mut self) -> Vec<Publish> {
        self.pkids.retain(|_, u| *u != PkidUse::Status);
        let resends: Vec<Publish> = self
            .entries
            .iter()
            .take(self.sent)
            .filter(|e| !e.acked)
            .map(|e| self.publish(e, true))
            .collect();
        self.counters.resent += resends.len() as u64;
        resends
    }

    /// Readings never sent, as many as the in-flight window allows.
    pub fn next_publishes(&mut self) -> Vec<Publish> {
        let mut out = Vec::new();
        while self.in_flight < self.window && self.sent < self.entries.len() {
            let id = self.front_id + self.sent as u64;
            let pkid = self.allocate_pkid(PkidUse::Reading(id));
            let entry = &mut self.entries[self.sent];
            entry.pkid = pkid;
            out.push(self.publish(&self.entries[self.sent], false));
            self.sent += 1;
            self.in_flight += 1;
            self.counters.published += 1;
        }
        out
    }

    /// A status message (QoS 1, retained) with a fresh packet identifier.
    pub fn status_publish(&mut self, topic: String, payload: Bytes) -> Publish {
        let pkid = self.allocate_pkid(PkidUse::Status);
        let mut p = Publish::from_bytes(topic, QoS::AtLeastOnce, payload);
        p.retain = true;
        p.pkid = pkid;
        p
    }

    /// A PUBACK arrived.
    pub fn on_puback(&mut self, pkid: u16) -> Acked {
        match self.pkids.remove(&pkid) {
            None => Acked::Unknown,
            Some(PkidUse::Status) => Acked::Status,
            Some(PkidUse::Reading(id)) => {
                let index = (id - self.front_id) as usize;
                let entry = &mut self.entries[index];
                entry.acked = true;
                let seq = entry.seq;
                self.in_flight -= 1;
                self.counters.acked += 1;
                while self.entries.front().is_some_and(|e| e.acked) {
                    self.entries.pop_front();
                    self.front_id += 1;
                    self.sent -= 1;
                }
                Acked::Reading { seq }
            }
        }
    }

    fn publish(&self, e: &Entry, dup: bool) -> Publish {
        let mut p = Publish::from_bytes(self.topic.clone(), QoS::AtLeastOnce, e.payload.clone());
        p.pkid = e.pkid;
        p.dup = dup;
        p
    }

    fn allocate_pkid(&mut self, usage: PkidUse) -> u16 {
        loop {
            let pkid = self.next_pkid;
            self.next_pkid = self.next_pkid.checked_add(1).unwrap_or(1);
            if let std::collections::hash_map::Entry::Vacant(slot) = self.pkids.entry(pkid) {
                slot.insert(usage);
                return pkid;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn outbox(capacity: usize, window: usize) -> Outbox {
        let mut o = Outbox::new("t".into(), capacity, window);
        for seq in 1..=capacity as u64 {
            o.try_push(seq, Bytes::from(seq.to_string())).expect("room");
        }
        o
    }

    fn seqs(ps: &[Publish]) -> Vec<u64> {
        ps.iter()
            .map(|p| {
                std::str::from_utf8(&p.payload)
                    .expect("utf8")
                    .parse()
                    .expect("number")
            })
            .collect()
    }

    #[test]
    fn a_full_store_refuses_new_readings_and_keeps_the_old_ones() {
        let mut o = outbox(3, 2);
        assert_eq!(o.try_push(4, Bytes::new()), Err(OutboxFull { capacity: 3 }));
        assert_eq!(o.len(), 3);
        let sent = o.next_publishes();
        assert_eq!(seqs(&sent), [1, 2]);
        o.on_puback(sent[0].pkid);
        assert!(o.has_room());
        o.try_push(4, Bytes::from("4")).expect("room again");
    }

    #[test]
    fn the_window_bounds_what_is_in_flight_and_acks_may_come_out_of_order() {
        let mut o = outbox(10, 4);
        let first = o.next_publishes();
        assert_eq!(seqs(&first), [1, 2, 3, 4]);
        assert!(o.next_publishes().is_empty(), "window full");
        assert_eq!(o.on_puback(first[2].pkid), Acked::Reading { seq: 3 });
        assert_eq!(
            o.len(),
            10,
            "seq 1 is still unacknowledged: nothing released"
        );
        assert_eq!(seqs(&o.next_publishes()), [5]);
        assert_eq!(o.on_puback(first[0].pkid), Acked::Reading { seq: 1 });
        assert_eq!(o.len(), 9);
        assert_eq!(
            o.on_puback(first[0].pkid),
            Acked::Unknown,
            "duplicate PUBACK"
        );
    }

    #[test]
    fn a_reconnect_resends_the_unacknowledged_in_order_with_dup_and_their_pkids() {
        let mut o = outbox(10, 4);
        let birth = o.status_publish("s".into(), Bytes::from("online"));
        let first = o.next_publishes();
        o.on_puback(first[1].pkid);
        let resent = o.resume();
        assert_eq!(seqs(&resent), [1, 3, 4]);
        assert!(resent.iter().all(|p| p.dup));
        assert_eq!(
            resent.iter().map(|p| p.pkid).collect::<Vec<_>>(),
            [first[0].pkid, first[2].pkid, first[3].pkid]
        );
        assert_eq!(
            o.on_puback(birth.pkid),
            Acked::Unknown,
            "the old session's birth is forgotten"
        );
        assert_eq!(seqs(&o.next_publishes()), [5]);
        let c = o.counters();
        assert_eq!((c.produced, c.published, c.resent, c.acked), (10, 5, 3, 1));
    }

    #[test]
    fn packet_identifiers_wrap_and_skip_those_in_use() {
        let mut o = Outbox::new("t".into(), 100_000, 2);
        let mut seq = 0;
        let held = {
            seq += 1;
            o.try_push(seq, Bytes::new()).expect("room");
            o.next_publishes()[0].pkid
        };
        for _ in 0..70_000 {
            seq += 1;
            o.try_push(seq, Bytes::new()).expect("room");
            let p = o.next_publishes();
            assert_eq!(p.len(), 1);
            assert_ne!(p[0].pkid, held);
            assert_ne!(p[0].pkid, 0);
            o.on_puback(p[0].pkid);
        }
        assert_eq!(o.on_puback(held), Acked::Reading { seq: 1 });
        assert!(o.is_empty());
    }
}
