//! What one client may hold of the server, so that no client holds all of it: connections
//! per network address, the time a request's body may take to arrive, places among the
//! writes waiting, and a turn for each caller at the writer.

use hyper::body::{Body, Bytes, Frame, SizeHint};
use std::collections::{HashMap, VecDeque};
use std::fmt;
use std::future::Future;
use std::net::IpAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::time::{Instant, Sleep};

/// The network address connections are counted by: an IPv4 address, or the /64 of an
/// IPv6 one (what one host is usually given). An IPv4 address mapped into IPv6 (a
/// dual-stack listener) is its IPv4 address.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Address(IpAddr);

impl Address {
    /// The address `ip` is counted under.
    pub fn of(ip: IpAddr) -> Address {
        match ip {
            IpAddr::V4(v4) => Address(IpAddr::V4(v4)),
            IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
                Some(v4) => Address(IpAddr::V4(v4)),
                None => {
                    let prefix = u128::from(v6) & !((1u128 << 64) - 1);
                    Address(IpAddr::V6(prefix.into()))
                }
            },
        }
    }
}

impl fmt::Display for Address {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            IpAddr::V4(v4) => write!(f, "{v4}"),
            IpAddr::V6(v6) => write!(f, "{v6}/64"),
        }
    }
}

/// The connections each [`Address`] holds.
#[derive(Debug, Default)]
pub struct AddressSlots {
    held: Mutex<HashMap<Address, usize>>,
}

/// One connection's place in its address's share, given back when dropped.
#[derive(Debug)]
pub struct AddressSlot {
    slots: Arc<AddressSlots>,
    address: Address,
}

impl AddressSlots {
    /// A place for one more connection of `address`, unless it holds `cap` already.
    pub fn take(self: &Arc<Self>, address: Address, cap: usize) -> Option<AddressSlot> {
        let mut held = self.held.lock().unwrap_or_else(PoisonError::into_inner);
        let n = held.entry(address).or_insert(0);
        if *n >= cap {
            if *n == 0 {
                held.remove(&address);
            }
            return None;
        }
        *n += 1;
        Some(AddressSlot {
            slots: Arc::clone(self),
            address,
        })
    }

    /// How many connections `address` holds.
    pub fn held(&self, address: Address) -> usize {
        let held = self.held.lock().unwrap_or_else(PoisonError::into_inner);
        held.get(&address).copied().unwrap_or(0)
    }
}

impl Drop for AddressSlot {
    fn drop(&mut self) {
        let mut held = self
            .slots
            .held
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if let Some(n) = held.get_mut(&self.address) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                held.remove(&self.address);
            }
        }
    }
}

/// The connections that have not sent a request yet, by address, so that one more
/// connection past the server's cap can take the place of one of them
/// ([`Waiting::evict`]) rather than be refused: sockets opened and left silent, from
/// however many addresses, cannot keep a client that sends requests out.
#[derive(Debug, Default)]
pub struct Waiting {
    next: std::sync::atomic::AtomicU64,
    held: Mutex<HashMap<u64, (Address, Arc<tokio::sync::Notify>)>>,
}

/// A connection's place among the [`Waiting`] ones until it sends its first request
/// ([`WaitingPlace::served`]) or closes.
#[derive(Debug)]
pub struct WaitingPlace {
    waiting: Arc<Waiting>,
    id: u64,
    /// Notified when the connection is to close to make room.
    pub evicted: Arc<tokio::sync::Notify>,
}

impl Waiting {
    /// Registers a new connection of `address` that has sent nothing yet.
    pub fn enter(self: &Arc<Self>, address: Address) -> WaitingPlace {
        let id = self.next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let evicted = Arc::new(tokio::sync::Notify::new());
        self.held
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(id, (address, Arc::clone(&evicted)));
        WaitingPlace {
            waiting: Arc::clone(self),
            id,
            evicted,
        }
    }

    /// Makes room for a new connection of `newcomer`: tells the oldest silent connection
    /// of the address that holds the most of them to close, if that address holds more
    /// than `newcomer` does (an address does not churn its own silent connections: its
    /// surplus is refused); whether one was told. A connection that has sent a request
    /// is never chosen.
    pub fn evict(&self, newcomer: Address) -> bool {
        let mut held = self.held.lock().unwrap_or_else(PoisonError::into_inner);
        let mut per_address: HashMap<Address, usize> = HashMap::new();
        for (address, _) in held.values() {
            *per_address.entry(*address).or_default() += 1;
        }
        let count = |a: &Address| per_address.get(a).copied().unwrap_or(0);
        let Some((chosen, heaviest)) = held
            .iter()
            .max_by_key(|(id, (address, _))| (count(address), std::cmp::Reverse(**id)))
            .map(|(id, (address, _))| (*id, *address))
        else {
            return false;
        };
        if count(&heaviest) <= count(&newcomer) {
            return false;
        }
        if let Some((_, evicted)) = held.remove(&chosen) {
            evicted.notify_one();
        }
        true
    }
}

impl WaitingPlace {
    /// The connection sent a request: it is no longer one to evict.
    pub fn served(&self) {
        self.waiting
            .held
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(&self.id);
    }
}

impl Drop for WaitingPlace {
    fn drop(&mut self) {
        self.served();
    }
}

/// How long a request's body may take to arrive: whole within `deadline` of the request's
/// head, and, once `grace` has passed, at `min_rate` bytes a second at least on average
/// since the head (0: no least rate).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BodyLimits {
    /// The time the whole body has.
    pub deadline: Duration,
    /// The time a body may take at any pace.
    pub grace: Duration,
    /// Bytes a second a body must keep to after its grace; 0: any.
    pub min_rate: u64,
}

/// Why a body was cut off: too slow for [`BodyLimits`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BodyTooSlow {
    /// Not whole within the deadline.
    Deadline(Duration),
    /// Under the least rate once the grace was over.
    Rate {
        /// Bytes a second it arrived at.
        rate: u64,
        /// Bytes a second it had to keep to.
        min_rate: u64,
        /// The grace it had.
        grace: Duration,
    },
}

/// `30 s`, `1.5 s`.
fn seconds(d: Duration) -> String {
    if d.subsec_millis() == 0 {
        format!("{} s", d.as_secs())
    } else {
        format!("{:.1} s", d.as_secs_f64())
    }
}

impl fmt::Display for BodyTooSlow {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            BodyTooSlow::Deadline(d) => write!(
                f,
                "the body did not arrive whole within {}; a request's body must arrive within {} of its head",
                seconds(*d),
                seconds(*d)
            ),
            BodyTooSlow::Rate {
                rate,
                min_rate,
                grace,
            } => write!(
                f,
                "the body arrived at {rate} bytes a second; after {} a body must keep to {min_rate} bytes a second at least",
                seconds(*grace)
            ),
        }
    }
}

impl std::error::Error for BodyTooSlow {}

impl BodyTooSlow {
    /// The [`BodyTooSlow`] that `error` is or was caused by, if any.
    pub fn within<'a>(error: &'a (dyn std::error::Error + 'static)) -> Option<&'a BodyTooSlow> {
        let mut at = Some(error);
        while let Some(e) = at {
            if let Some(slow) = e.downcast_ref::<BodyTooSlow>() {
                return Some(slow);
            }
            at = e.source();
        }
        None
    }
}

/// A request body held to [`BodyLimits`], counted from when it is made (as the request's
/// head arrives). Past them it gives a [`BodyTooSlow`] error, again on every later poll: a
/// body cut off never looks whole. A timer is set only once the body has to be waited for.
#[derive(Debug)]
pub struct DeadlineBody<B> {
    inner: B,
    limits: BodyLimits,
    started: Instant,
    received: u64,
    timer: Option<Pin<Box<Sleep>>>,
    failed: Option<BodyTooSlow>,
}

impl<B> DeadlineBody<B> {
    /// `inner`, held to `limits` from now.
    pub fn new(inner: B, limits: BodyLimits) -> DeadlineBody<B> {
        DeadlineBody {
            inner,
            limits,
            started: Instant::now(),
            received: 0,
            timer: None,
            failed: None,
        }
    }

    /// Why the body is too slow at `now`, if it is.
    fn too_slow(&self, now: Instant) -> Option<BodyTooSlow> {
        let elapsed = now.saturating_duration_since(self.started);
        if elapsed >= self.limits.deadline {
            return Some(BodyTooSlow::Deadline(self.limits.deadline));
        }
        let min_rate = self.limits.min_rate;
        let ms = elapsed.as_millis().max(1);
        let (received, owed) = (u128::from(self.received) * 1000, u128::from(min_rate) * ms);
        if min_rate > 0 && elapsed >= self.limits.grace && received < owed {
            return Some(BodyTooSlow::Rate {
                rate: u64::try_from(received / ms).unwrap_or(u64::MAX),
                min_rate,
                grace: self.limits.grace,
            });
        }
        None
    }

    /// When the body is too slow if nothing more of it arrives.
    fn next_check(&self) -> Instant {
        let deadline = self.after(self.limits.deadline);
        if self.limits.min_rate == 0 {
            return deadline;
        }
        let ms = u128::from(self.received) * 1000 / u128::from(self.limits.min_rate);
        let covered = Duration::from_millis(u64::try_from(ms).unwrap_or(u64::MAX));
        deadline.min(self.after(self.limits.grace.max(covered)))
    }

    /// `d` after the head, or thirty years on for a duration too long to add.
    fn after(&self, d: Duration) -> Instant {
        self.started
            .checked_add(d)
            .or_else(|| {
                self.started
                    .checked_add(Duration::from_secs(30 * 365 * 86_400))
            })
            .unwrap_or(self.started)
    }
}

type BoxError = Box<dyn std::error::Error + Send + Sync>;

impl<B> Body for DeadlineBody<B>
where
    B: Body<Data = Bytes> + Unpin,
    B::Error: Into<BoxError>,
{
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = self.get_mut();
        if let Some(e) = &this.failed {
            return Poll::Ready(Some(Err(Box::new(e.clone()))));
        }
        match Pin::new(&mut this.inner).poll_frame(cx) {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(data) = frame.data_ref() {
                    this.received = this.received.saturating_add(data.len() as u64);
                }
                return Poll::Ready(Some(Ok(frame)));
            }
            Poll::Ready(Some(Err(e))) => return Poll::Ready(Some(Err(e.into()))),
            Poll::Ready(None) => return Poll::Ready(None),
            Poll::Pending => {}
        }
        // Waiting for more: wake up when the body would be too slow without it.
        loop {
            let now = Instant::now();
            if let Some(e) = this.too_slow(now) {
                this.failed = Some(e.clone());
                return Poll::Ready(Some(Err(Box::new(e))));
            }
            let at = this.next_check().max(now + Duration::from_millis(1));
            let timer = this
                .timer
                .get_or_insert_with(|| Box::pin(tokio::time::sleep_until(at)));
            if timer.deadline() != at {
                timer.as_mut().reset(at);
            }
            if timer.as_mut().poll(cx).is_pending() {
                return Poll::Pending;
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.failed.is_none() && self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// Places counted per caller and in all, each with a cap: the writes waiting for the
/// writer, so that one caller cannot take every place.
#[derive(Debug)]
pub struct Places {
    per_caller: usize,
    total: usize,
    /// The places held by caller, and in all.
    held: Mutex<(HashMap<String, usize>, usize)>,
}

/// One place, given back when dropped.
#[derive(Debug)]
pub struct Place {
    places: Arc<Places>,
    caller: String,
}

/// Why no place was given: the caller holds its cap, or all are held (the cap is said).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Full {
    /// The caller holds this many.
    Caller(usize),
    /// This many are held in all.
    All(usize),
}

impl Places {
    /// `per_caller` places for each caller, `total` in all.
    pub fn new(per_caller: usize, total: usize) -> Places {
        Places {
            per_caller,
            total,
            held: Mutex::default(),
        }
    }

    /// A place for `caller`, unless it holds its cap or all are held.
    pub fn take(self: &Arc<Self>, caller: &str) -> Result<Place, Full> {
        let mut held = self.held.lock().unwrap_or_else(PoisonError::into_inner);
        let (by_caller, all) = &mut *held;
        if *all >= self.total {
            return Err(Full::All(self.total));
        }
        let mine = by_caller.get(caller).copied().unwrap_or(0);
        if mine >= self.per_caller {
            return Err(Full::Caller(self.per_caller));
        }
        by_caller.insert(caller.to_string(), mine + 1);
        *all += 1;
        Ok(Place {
            places: Arc::clone(self),
            caller: caller.to_string(),
        })
    }
}

impl Drop for Place {
    fn drop(&mut self) {
        let mut held = self
            .places
            .held
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let (by_caller, all) = &mut *held;
        *all = all.saturating_sub(1);
        if let Some(n) = by_caller.get_mut(&self.caller) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                by_caller.remove(&self.caller);
            }
        }
    }
}

/// Items waiting, taken a caller at a time in turn: each caller's items in the order they
/// came, the callers round-robin, so a caller with many waiting delays another by at most
/// one of its own before the other's turn.
#[derive(Debug)]
pub struct FairQueue<T> {
    waiting: HashMap<String, VecDeque<T>>,
    /// The callers with items waiting, the next to be served first.
    turns: VecDeque<String>,
    len: usize,
}

impl<T> Default for FairQueue<T> {
    fn default() -> Self {
        FairQueue {
            waiting: HashMap::new(),
            turns: VecDeque::new(),
            len: 0,
        }
    }
}

impl<T> FairQueue<T> {
    /// Adds `item` after `caller`'s others.
    pub fn push(&mut self, caller: &str, item: T) {
        match self.waiting.get_mut(caller) {
            Some(q) => q.push_back(item),
            None => {
                self.waiting
                    .insert(caller.to_string(), VecDeque::from([item]));
                self.turns.push_back(caller.to_string());
            }
        }
        self.len += 1;
    }

    /// The next item in turn, if `take` accepts it; the turn stays with its caller when not.
    pub fn pop_if(&mut self, take: impl FnOnce(&T) -> bool) -> Option<T> {
        let caller = self.turns.front()?;
        let queue = self.waiting.get_mut(caller)?;
        if !take(queue.front()?) {
            return None;
        }
        let item = queue.pop_front()?;
        self.len -= 1;
        let caller = self.turns.pop_front()?;
        if queue.is_empty() {
            self.waiting.remove(&caller);
        } else {
            self.turns.push_back(caller);
        }
        Some(item)
    }

    /// The next item in turn.
    pub fn pop(&mut self) -> Option<T> {
        self.pop_if(|_| true)
    }

    /// How many items wait.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether none waits.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ipv6_addresses_are_counted_by_their_64_and_ipv4_exactly() {
        let a = |s: &str| Address::of(s.parse().unwrap_or(IpAddr::from([0, 0, 0, 0])));
        assert_eq!(a("2001:db8:1:2::1"), a("2001:db8:1:2:ffff:ffff:ffff:ffff"));
        assert_ne!(a("2001:db8:1:2::1"), a("2001:db8:1:3::1"));
        assert_eq!(a("2001:db8:1:2::1").to_string(), "2001:db8:1:2::/64");
        assert_ne!(a("10.0.0.1"), a("10.0.0.2"));
        assert_eq!(a("::ffff:10.0.0.1"), a("10.0.0.1"));
        assert_eq!(a("10.0.0.1").to_string(), "10.0.0.1");
    }

    #[test]
    fn an_address_holds_at_most_its_cap_and_gets_its_places_back() {
        let slots = Arc::new(AddressSlots::default());
        let a = Address::of(IpAddr::from([10, 0, 0, 1]));
        let b = Address::of(IpAddr::from([10, 0, 0, 2]));
        let held: Vec<_> = (0..3).filter_map(|_| slots.take(a, 3)).collect();
        assert_eq!(held.len(), 3);
        assert!(slots.take(a, 3).is_none());
        assert!(slots.take(b, 3).is_some());
        drop(held);
        assert_eq!(slots.held(a), 0);
        assert!(slots.take(a, 3).is_some());
    }

    #[test]
    fn a_caller_holds_at_most_its_places() {
        let places = Arc::new(Places::new(2, 3));
        let a: Vec<_> = (0..2).filter_map(|_| places.take("a").ok()).collect();
        assert_eq!(places.take("a").err(), Some(Full::Caller(2)));
        let b = places.take("b");
        assert!(b.is_ok());
        assert_eq!(places.take("c").err(), Some(Full::All(3)));
        drop(a);
        assert!(places.take("a").is_ok());
    }

    #[test]
    fn callers_are_served_in_turn() {
        let mut q = FairQueue::default();
        for i in 0..4 {
            q.push("greedy", format!("g{i}"));
        }
        q.push("other", "o0".to_string());
        q.push("third", "t0".to_string());
        q.push("other", "o1".to_string());
        let mut order = Vec::new();
        while let Some(x) = q.pop() {
            order.push(x);
        }
        assert_eq!(order, ["g0", "o0", "t0", "g1", "o1", "g2", "g3"]);
        assert!(q.is_empty());
        q.push("a", "big".to_string());
        q.push("b", "small".to_string());
        assert_eq!(q.pop_if(|x| x.as_str() != "big"), None);
        assert_eq!(q.len(), 2);
        assert_eq!(q.pop().as_deref(), Some("big"));
    }
}
