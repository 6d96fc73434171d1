//! A limit order book as a raftline [`Service`]: one instrument, price-time priority, orders
//! new, cancel and replace; every fill is sent to both sides' sessions. The book is kept in
//! snapshots, so a replica restarts from its newest one.
//!
//! Requests (little-endian, 34 bytes):
//! ```text
//! kind u8 (1 new, 2 cancel, 3 replace) | order id u64 | side u8 (0 buy, 1 sell) | price u64
//! | quantity u64 | client tag u64
//! ```
//! A cancel needs only the order id; a replace gives the new price and quantity (same side).
//! Order ids are chosen by clients and must be unused; only the session that placed an order
//! may cancel or replace it.
//!
//! Events (egress, 42 bytes): `kind u8 | order id u64 | other order id u64 | price u64 |
//! quantity u64 | client tag u64 | reason u8`, kinds in [`EventKind`].
//!
//! Replace keeps the order's time priority when only its quantity goes down; a new price or a
//! larger quantity sends it to the back of its new level (and it may trade at once).

use std::collections::{BTreeMap, VecDeque};

use raftline::service::{fnv1a, Context, Service, FNV_OFFSET};

pub const REQUEST_LEN: usize = 34;
pub const EVENT_LEN: usize = 42;

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Side {
    Buy = 0,
    Sell = 1,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Request {
    New {
        id: u64,
        side: Side,
        price: u64,
        quantity: u64,
    },
    Cancel {
        id: u64,
    },
    Replace {
        id: u64,
        price: u64,
        quantity: u64,
    },
}

impl Request {
    /// The request payload; `tag` comes back on every event it causes for the sender.
    pub fn encode(&self, tag: u64) -> [u8; REQUEST_LEN] {
        let (kind, id, side, price, quantity) = match *self {
            Request::New {
                id,
                side,
                price,
                quantity,
            } => (1u8, id, side as u8, price, quantity),
            Request::Cancel { id } => (2, id, 0, 0, 0),
            Request::Replace {
                id,
                price,
                quantity,
            } => (3, id, 0, price, quantity),
        };
        let mut out = [0u8; REQUEST_LEN];
        out[0] = kind;
        out[1..9].copy_from_slice(&id.to_le_bytes());
        out[9] = side;
        out[10..18].copy_from_slice(&price.to_le_bytes());
        out[18..26].copy_from_slice(&quantity.to_le_bytes());
        out[26..34].copy_from_slice(&tag.to_le_bytes());
        out
    }

    pub fn decode(bytes: &[u8]) -> Option<(Request, u64)> {
        if bytes.len() != REQUEST_LEN {
            return None;
        }
        let word = |at: usize| u64::from_le_bytes(bytes[at..at + 8].try_into().expect("8"));
        let (id, price, quantity, tag) = (word(1), word(10), word(18), word(26));
        let side = match bytes[9] {
            0 => Side::Buy,
            1 => Side::Sell,
            _ => return None,
        };
        let request = match bytes[0] {
            1 => Request::New {
                id,
                side,
                price,
                quantity,
            },
            2 => Request::Cancel { id },
            3 => Request::Replace {
                id,
                price,
                quantity,
            },
            _ => return None,
        };
        Some((request, tag))
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EventKind {
    Accepted = 1,
    Rejected = 2,
    /// `order` traded `quantity` at `price` against `other`.
    Fill = 3,
    Cancelled = 4,
    Replaced = 5,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Reject {
    Malformed = 1,
    DuplicateId = 2,
    UnknownOrder = 3,
    NotOwner = 4,
    BadQuantityOrPrice = 5,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Event {
    pub kind: EventKind,
    pub order: u64,
    pub other: u64,
    pub price: u64,
    pub quantity: u64,
    pub tag: u64,
    pub reason: u8,
}

impl Event {
    fn of(kind: EventKind, order: u64, tag: u64) -> Self {
        Self {
            kind,
            order,
            other: 0,
            price: 0,
            quantity: 0,
            tag,
            reason: 0,
        }
    }

    pub fn encode(&self) -> [u8; EVENT_LEN] {
        let mut out = [0u8; EVENT_LEN];
        out[0] = self.kind as u8;
        for (i, v) in [self.order, self.other, self.price, self.quantity, self.tag]
            .iter()
            .enumerate()
        {
            out[1 + i * 8..9 + i * 8].copy_from_slice(&v.to_le_bytes());
        }
        out[41] = self.reason;
        out
    }

    pub fn decode(bytes: &[u8]) -> Option<Self> {
        if bytes.len() != EVENT_LEN {
            return None;
        }
        let word =
            |i: usize| u64::from_le_bytes(bytes[1 + i * 8..9 + i * 8].try_into().expect("8"));
        let kind = match bytes[0] {
            1 => EventKind::Accepted,
            2 => EventKind::Rejected,
            3 => EventKind::Fill,
            4 => EventKind::Cancelled,
            5 => EventKind::Replaced,
            _ => return None,
        };
        Some(Self {
            kind,
            order: word(0),
            other: word(1),
            price: word(2),
            quantity: word(3),
            tag: word(4),
            reason: bytes[41],
        })
    }
}

/// A resting order.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Order {
    pub id: u64,
    pub owner: u64,
    pub quantity: u64,
    pub tag: u64,
}

/// The order book; see the crate docs.
#[derive(Debug)]
pub struct OrderBook {
    /// Price levels, each in time priority. Bids are matched from the highest price, asks
    /// from the lowest.
    bids: BTreeMap<u64, VecDeque<Order>>,
    asks: BTreeMap<u64, VecDeque<Order>>,
    /// Where each resting order is: id -> (side, price).
    index: BTreeMap<u64, (Side, u64)>,
    digest: u64,
    fills: u64,
}

impl Default for OrderBook {
    fn default() -> Self {
        Self {
            bids: BTreeMap::new(),
            asks: BTreeMap::new(),
            index: BTreeMap::new(),
            digest: FNV_OFFSET,
            fills: 0,
        }
    }
}

impl OrderBook {
    /// Handles one request from `session`; every event goes to `emit(session, event)`.
    pub fn handle(
        &mut self,
        session: u64,
        request: Request,
        tag: u64,
        emit: &mut impl FnMut(u64, Event),
    ) {
        match request {
            Request::New {
                id,
                side,
                price,
                quantity,
            } => {
                if quantity == 0 || price == 0 {
                    return self.reject(session, id, tag, Reject::BadQuantityOrPrice, emit);
                }
                if self.index.contains_key(&id) {
                    return self.reject(session, id, tag, Reject::DuplicateId, emit);
                }
                self.record(emit, session, Event::of(EventKind::Accepted, id, tag));
                let order = Order {
                    id,
                    owner: session,
                    quantity,
                    tag,
                };
                self.place(side, price, order, emit);
            }
            Request::Cancel { id } => {
                let Some((side, price, order)) = self.owned(session, id, tag, emit) else {
                    return;
                };
                self.remove(side, price, id);
                self.record(
                    emit,
                    session,
                    Event::of(EventKind::Cancelled, id, order.tag),
                );
            }
            Request::Replace {
                id,
                price,
                quantity,
            } => {
                if quantity == 0 || price == 0 {
                    return self.reject(session, id, tag, Reject::BadQuantityOrPrice, emit);
                }
                let Some((side, old_price, order)) = self.owned(session, id, tag, emit) else {
                    return;
                };
                let mut replaced = Event::of(EventKind::Replaced, id, tag);
                replaced.price = price;
                replaced.quantity = quantity;
                if price == old_price && quantity <= order.quantity {
                    // Smaller at the same price: keeps its place in the queue.
                    let level = self.level_mut(side, price);
                    let o = level.iter_mut().find(|o| o.id == id).expect("indexed");
                    o.quantity = quantity;
                    o.tag = tag;
                    self.record(emit, session, replaced);
                } else {
                    self.remove(side, old_price, id);
                    self.record(emit, session, replaced);
                    let order = Order {
                        quantity,
                        tag,
                        ..order
                    };
                    self.place(side, price, order, emit);
                }
            }
        }
    }

    /// The order `id` if `session` owns it; otherwise rejects.
    fn owned(
        &mut self,
        session: u64,
        id: u64,
        tag: u64,
        emit: &mut impl FnMut(u64, Event),
    ) -> Option<(Side, u64, Order)> {
        let Some(&(side, price)) = self.index.get(&id) else {
            self.reject(session, id, tag, Reject::UnknownOrder, emit);
            return None;
        };
        let order = *self
            .level_mut(side, price)
            .iter()
            .find(|o| o.id == id)
            .expect("indexed");
        if order.owner != session {
            self.reject(session, id, tag, Reject::NotOwner, emit);
            return None;
        }
        Some((side, price, order))
    }

    fn reject(
        &mut self,
        session: u64,
        id: u64,
        tag: u64,
        why: Reject,
        emit: &mut impl FnMut(u64, Event),
    ) {
        let mut e = Event::of(EventKind::Rejected, id, tag);
        e.reason = why as u8;
        self.record(emit, session, e);
    }

    fn record(&mut self, emit: &mut impl FnMut(u64, Event), session: u64, event: Event) {
        self.digest = fnv1a(fnv1a(self.digest, &session.to_le_bytes()), &event.encode());
        emit(session, event);
    }

    fn level_mut(&mut self, side: Side, price: u64) -> &mut VecDeque<Order> {
        let book = match side {
            Side::Buy => &mut self.bids,
            Side::Sell => &mut self.asks,
        };
        book.get_mut(&price).expect("the level of an indexed order")
    }

    fn remove(&mut self, side: Side, price: u64, id: u64) {
        let book = match side {
            Side::Buy => &mut self.bids,
            Side::Sell => &mut self.asks,
        };
        let level = book.get_mut(&price).expect("indexed");
        level.retain(|o| o.id != id);
        if level.is_empty() {
            book.remove(&price);
        }
        self.index.remove(&id);
    }

    /// Matches `order` against the other side while prices cross, then rests what is left.
    fn place(
        &mut self,
        side: Side,
        price: u64,
        mut order: Order,
        emit: &mut impl FnMut(u64, Event),
    ) {
        loop {
            if order.quantity == 0 {
                return;
            }
            let best = match side {
                Side::Buy => self
                    .asks
                    .first_key_value()
                    .map(|(p, _)| *p)
                    .filter(|p| *p <= price),
                Side::Sell => self
                    .bids
                    .last_key_value()
                    .map(|(p, _)| *p)
                    .filter(|p| *p >= price),
            };
            let Some(level_price) = best else { break };
            let book = match side {
                Side::Buy => &mut self.asks,
                Side::Sell => &mut self.bids,
            };
            let level = book.get_mut(&level_price).expect("best level");
            let resting = level.front_mut().expect("levels are never empty");
            let quantity = order.quantity.min(resting.quantity);
            resting.quantity -= quantity;
            order.quantity -= quantity;
            let resting_copy = *resting;
            if resting.quantity == 0 {
                level.pop_front();
                if level.is_empty() {
                    book.remove(&level_price);
                }
                self.index.remove(&resting_copy.id);
            }
            self.fills += 1;
            // Both sides hear of it, each with its own order first.
            let fill = |mine: &Order, theirs: &Order| Event {
                kind: EventKind::Fill,
                order: mine.id,
                other: theirs.id,
                price: level_price,
                quantity,
                tag: mine.tag,
                reason: 0,
            };
            self.record(emit, order.owner, fill(&order, &resting_copy));
            self.record(emit, resting_copy.owner, fill(&resting_copy, &order));
        }
        let book = match side {
            Side::Buy => &mut self.bids,
            Side::Sell => &mut self.asks,
        };
        book.entry(price).or_default().push_back(order);
        self.index.insert(order.id, (side, price));
    }

    /// Resting orders: (side, price, order) in priority order (bids best first, then asks).
    pub fn resting(&self) -> Vec<(Side, u64, Order)> {
        let bids = self
            .bids
            .iter()
            .rev()
            .flat_map(|(p, l)| l.iter().map(move |o| (Side::Buy, *p, *o)));
        let asks = self
            .asks
            .iter()
            .flat_map(|(p, l)| l.iter().map(move |o| (Side::Sell, *p, *o)));
        bids.chain(asks).collect()
    }

    pub fn best_bid(&self) -> Option<u64> {
        self.bids.last_key_value().map(|(p, _)| *p)
    }

    pub fn best_ask(&self) -> Option<u64> {
        self.asks.first_key_value().map(|(p, _)| *p)
    }

    pub fn fills(&self) -> u64 {
        self.fills
    }

    /// `[digest | fills | count | (side, price, id, owner, quantity, tag) * count]`, in
    /// priority order so that restoring rebuilds the same queues.
    pub fn write_snapshot(&self, out: &mut Vec<u8>) {
        let resting = self.resting();
        for v in [self.digest, self.fills, resting.len() as u64] {
            out.extend_from_slice(&v.to_le_bytes());
        }
        for (side, price, o) in resting {
            for v in [side as u64, price, o.id, o.owner, o.quantity, o.tag] {
                out.extend_from_slice(&v.to_le_bytes());
            }
        }
    }

    pub fn read_snapshot(bytes: &[u8]) -> Result<Self, String> {
        if bytes.len() % 8 != 0 || bytes.len() < 24 {
            return Err(format!("order book snapshot: {} bytes", bytes.len()));
        }
        let words: Vec<u64> = bytes
            .chunks_exact(8)
            .map(|c| u64::from_le_bytes(c.try_into().expect("8")))
            .collect();
        let count = words[2] as usize;
        if words.len() != 3 + 6 * count {
            return Err(format!(
                "order book snapshot: {count} orders in {} bytes",
                bytes.len()
            ));
        }
        let mut book = OrderBook {
            digest: words[0],
            fills: words[1],
            ..OrderBook::default()
        };
        for w in words[3..].chunks_exact(6) {
            let side = match w[0] {
                0 => Side::Buy,
                1 => Side::Sell,
                s => return Err(format!("order book snapshot: side {s}")),
            };
            let order = Order {
                id: w[2],
                owner: w[3],
                quantity: w[4],
                tag: w[5],
            };
            let levels = match side {
                Side::Buy => &mut book.bids,
                Side::Sell => &mut book.asks,
            };
            levels.entry(w[1]).or_default().push_back(order);
            book.index.insert(order.id, (side, w[1]));
        }
        Ok(book)
    }
}

/// The service: the book, fed from the log; events go to the sessions concerned.
#[derive(Debug, Default)]
pub struct MatchingEngine {
    pub book: OrderBook,
}

impl Service for MatchingEngine {
    fn on_message(&mut self, ctx: &mut Context, session_id: u64, payload: &[u8]) {
        let mut emit = |to: u64, e: Event| ctx.send(to, &e.encode());
        match Request::decode(payload) {
            Some((request, tag)) => self.book.handle(session_id, request, tag, &mut emit),
            None => self
                .book
                .reject(session_id, 0, 0, Reject::Malformed, &mut emit),
        }
    }

    fn digest(&self) -> u64 {
        self.book.digest
    }

    fn on_take_snapshot(&mut self, _position: u64, out: &mut Vec<u8>) -> bool {
        self.book.write_snapshot(out);
        true
    }

    fn on_start(&mut self, snapshot: Option<&[u8]>) -> Result<(), String> {
        if let Some(bytes) = snapshot {
            self.book = OrderBook::read_snapshot(bytes)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(book: &mut OrderBook, session: u64, r: Request) -> Vec<(u64, Event)> {
        let mut out = Vec::new();
        book.handle(session, r, 0, &mut |s, e| out.push((s, e)));
        out
    }

    fn new(id: u64, side: Side, price: u64, quantity: u64) -> Request {
        Request::New {
            id,
            side,
            price,
            quantity,
        }
    }

    fn fills(events: &[(u64, Event)]) -> Vec<(u64, u64, u64, u64, u64)> {
        events
            .iter()
            .filter(|(_, e)| e.kind == EventKind::Fill)
            .map(|(s, e)| (*s, e.order, e.other, e.price, e.quantity))
            .collect()
    }

    #[test]
    fn price_then_time_priority_and_both_sides_hear_of_each_fill() {
        let mut b = OrderBook::default();
        run(&mut b, 1, new(1, Side::Sell, 101, 5));
        run(&mut b, 1, new(2, Side::Sell, 100, 5));
        run(&mut b, 2, new(3, Side::Sell, 100, 5));
        // A buy for 12 at 101: 100 first (order 2 then 3, by time), then 101.
        let events = run(&mut b, 9, new(10, Side::Buy, 101, 12));
        assert_eq!(
            fills(&events),
            vec![
                (9, 10, 2, 100, 5),
                (1, 2, 10, 100, 5),
                (9, 10, 3, 100, 5),
                (2, 3, 10, 100, 5),
                (9, 10, 1, 101, 2),
                (1, 1, 10, 101, 2),
            ]
        );
        assert_eq!(b.best_ask(), Some(101));
        assert_eq!(b.resting()[0].2.quantity, 3);
        // A buy below the ask rests.
        assert!(fills(&run(&mut b, 9, new(11, Side::Buy, 99, 1))).is_empty());
        assert_eq!(b.best_bid(), Some(99));
    }

    #[test]
    fn cancel_and_replace_follow_the_rules_and_only_the_owner_may() {
        let mut b = OrderBook::default();
        run(&mut b, 1, new(1, Side::Buy, 100, 5));
        run(&mut b, 2, new(2, Side::Buy, 100, 5));
        let e = run(&mut b, 2, Request::Cancel { id: 1 });
        assert_eq!(
            (e[0].1.kind, e[0].1.reason),
            (EventKind::Rejected, Reject::NotOwner as u8)
        );
        // Smaller at the same price keeps priority; order 1 still trades first.
        run(
            &mut b,
            1,
            Request::Replace {
                id: 1,
                price: 100,
                quantity: 3,
            },
        );
        let e = run(&mut b, 3, new(3, Side::Sell, 100, 3));
        assert_eq!(fills(&e)[0], (3, 3, 1, 100, 3));
        // A larger quantity loses priority.
        run(&mut b, 1, new(4, Side::Buy, 100, 1));
        run(
            &mut b,
            2,
            Request::Replace {
                id: 2,
                price: 100,
                quantity: 6,
            },
        );
        let e = run(&mut b, 3, new(5, Side::Sell, 100, 1));
        assert_eq!(fills(&e)[0], (3, 5, 4, 100, 1));
        // A replace that crosses trades at once.
        run(&mut b, 4, new(6, Side::Sell, 105, 2));
        let e = run(
            &mut b,
            2,
            Request::Replace {
                id: 2,
                price: 105,
                quantity: 6,
            },
        );
        assert_eq!(fills(&e)[0], (2, 2, 6, 105, 2));
        let e = run(&mut b, 1, Request::Cancel { id: 99 });
        assert_eq!(e[0].1.reason, Reject::UnknownOrder as u8);
        let e = run(&mut b, 1, new(2, Side::Buy, 1, 1));
        assert_eq!(e[0].1.reason, Reject::DuplicateId as u8);
    }

    #[test]
    fn a_snapshot_restores_the_queues_in_order() {
        let mut b = OrderBook::default();
        for (i, (side, price)) in [
            (Side::Buy, 99),
            (Side::Buy, 99),
            (Side::Sell, 101),
            (Side::Buy, 98),
        ]
        .iter()
        .enumerate()
        {
            run(&mut b, i as u64, new(i as u64 + 1, *side, *price, 4));
        }
        let mut bytes = Vec::new();
        b.write_snapshot(&mut bytes);
        let mut r = OrderBook::read_snapshot(&bytes).unwrap();
        assert_eq!(r.resting(), b.resting());
        assert_eq!(r.digest, b.digest);
        // Both then behave the same.
        let x = run(&mut b, 7, new(50, Side::Sell, 98, 9));
        let y = run(&mut r, 7, new(50, Side::Sell, 98, 9));
        assert_eq!(x, y);
        assert!(OrderBook::read_snapshot(&bytes[..bytes.len() - 8]).is_err());
    }

    #[test]
    fn requests_and_events_round_trip() {
        for r in [
            new(1, Side::Sell, 5, 6),
            Request::Cancel { id: 3 },
            Request::Replace {
                id: 4,
                price: 7,
                quantity: 8,
            },
        ] {
            assert_eq!(Request::decode(&r.encode(77)), Some((r, 77)));
        }
        assert_eq!(Request::decode(&[0u8; 3]), None);
        let e = Event {
            kind: EventKind::Fill,
            order: 1,
            other: 2,
            price: 3,
            quantity: 4,
            tag: 5,
            reason: 0,
        };
        assert_eq!(Event::decode(&e.encode()), Some(e));
    }
}

pub mod demo;
