//! Cluster mode: tidings nodes that share their channels through one Redis (`--redis`).
//!
//! # The model
//! A channel's log lives in Redis, and Redis alone assigns seqs. One Lua script does a whole
//! publish atomically (Redis runs a script as one command, nothing in between): take the
//! channel's epoch (create it with the log if the channel has no life yet), add one to its
//! seq, append the message, trim the log to `--retain`, and announce it on the channel's
//! pub/sub channel. So no seq exists without its message, and every node hears of every
//! publish exactly once, in order.
//!
//! Keys, per channel `C`:
//! - `tidings:C:meta`, a hash: `epoch` (8 hex digits, chosen by the node whose publish or
//!   read found the channel without one) and `seq` (the last seq given). With
//!   `--message-ttl`, it and the log expire that long after the last publish (or after the
//!   read that created them), so channel names that subscribers make up do not pile up;
//! - `tidings:C:log`, a **stream** whose entry IDs are `SEQ-0`. A stream, not a list, because
//!   its IDs are our seqs: `XADD .. MAXLEN` trims it by count in the same command, and a
//!   range read by seq (`XRANGE`) needs no arithmetic on indexes that shift as the front is
//!   trimmed. When the meta hash is created the log is deleted, so a log from a lost life
//!   never mixes with the new one;
//! - notifications go to the pub/sub channel `tidings:DB:C` (pub/sub ignores `SELECT`, so
//!   the db is in the name) as `EPOCH:SEQ:DATA`: the message itself, so a node never reads
//!   Redis back for a publish it was told of.
//!
//! If Redis loses the data (a restart without persistence, `FLUSHALL`, eviction), the meta
//! hash goes with it: the next publish or read creates a new epoch, and every subscriber's
//! cursor, of the old epoch, gets a reset, exactly as when a standalone hub restarts.
//!
//! # What a node does
//! Its hub is a **mirror** ([`crate::hub`]) of the channels it has subscribers for. For each
//! such channel it keeps a `Link`: it subscribes (Redis pub/sub) when the first local
//! subscriber comes, reads the channel's log once (one `EVALSHA` that returns epoch, seq and
//! the retained messages: one range read, whatever the number and cursors of its
//! subscribers), then takes each notification in order. A gap (a notification lost, another
//! epoch) reads the channel again. When no local subscriber is left, the link stays a few
//! seconds (a long-poll client re-polls at once, and unsubscribing between its polls would
//! churn) and then unsubscribes, and the mirror forgets the channel. One notification per node
//! per publish, never per subscriber: the node fans it out itself, with shared bytes.
//!
//! # Two connections, and what happens when Redis does not answer
//! Commands (publishes, reads) go on one connection, pipelined; notifications arrive on a
//! second one, which after `SUBSCRIBE` can carry nothing else. A command not answered within
//! `--redis-timeout` marks its connection down: the socket is closed, the publishes that
//! waited are answered `503` + `Retry-After` (one answered on a timeout may still have been
//! applied: every store with timeouts has this), and the connection is made again after a
//! backoff (100 ms doubling to 2 s, jittered so that the nodes of a cluster do not all come
//! back in the same millisecond). A connection that is idle is checked with a `PING` every
//! [`TICK`], so a Redis that stopped answering is noticed without traffic. When the
//! connections are back, every channel is subscribed and read again, and each subscriber gets
//! what it missed from its cursor: the log is in Redis, the cursors are the subscribers'.

use std::collections::HashMap;
use std::time::Duration;

use http::{Ctx, Responder};
use reactor::{Event, TimerId};

use crate::config::RedisOptions;
use crate::hub::EpochSource;
use crate::redis::conn::{Incoming, RedisConn, State};
use crate::redis::resp::{Reply, ReplyLimits};
use crate::render;
use crate::service::{Tidings, Timer};

/// How often idle connections are pinged and links without subscribers are looked at. A
/// link is dropped at the second look that finds it unused: 3 to 6 s after its last
/// subscriber left.
pub const TICK: Duration = Duration::from_secs(3);
/// First retry after a failure; it doubles up to [`MAX_BACKOFF`].
const FIRST_BACKOFF: Duration = Duration::from_millis(100);
const MAX_BACKOFF: Duration = Duration::from_secs(2);
/// Notifications kept for a channel while its log is being read; past it, it is read again.
const MAX_BUFFERED: usize = 10_000;

/// The publish: epoch and seq, append, trim, announce, in one step.
/// KEYS: meta, log. ARGV: epoch if new, data, retain, ttl ms (0: none), pub/sub channel.
const PUBLISH_SCRIPT: &str = r"
local epoch = redis.call('HGET', KEYS[1], 'epoch')
if not epoch then
  epoch = ARGV[1]
  redis.call('DEL', KEYS[2])
  redis.call('HSET', KEYS[1], 'epoch', epoch, 'seq', 0)
end
local seq = redis.call('HINCRBY', KEYS[1], 'seq', 1)
redis.call('XADD', KEYS[2], 'MAXLEN', ARGV[3], seq .. '-0', 'd', ARGV[2])
if tonumber(ARGV[4]) > 0 then
  redis.call('PEXPIRE', KEYS[1], ARGV[4])
  redis.call('PEXPIRE', KEYS[2], ARGV[4])
end
redis.call('PUBLISH', ARGV[5], epoch .. ':' .. seq .. ':' .. ARGV[2])
return {epoch, seq}
";

/// The read of a channel: epoch, last seq, retained messages. A channel without a life yet
/// gets one now (so every node and every subscriber sees the same epoch from the start).
/// KEYS: meta, log. ARGV: epoch if new, ttl ms (0: none).
const LOAD_SCRIPT: &str = r"
local meta = redis.call('HMGET', KEYS[1], 'epoch', 'seq')
if not meta[1] then
  redis.call('DEL', KEYS[2])
  redis.call('HSET', KEYS[1], 'epoch', ARGV[1], 'seq', 0)
  if tonumber(ARGV[2]) > 0 then
    redis.call('PEXPIRE', KEYS[1], ARGV[2])
  end
  return {ARGV[1], 0, {}}
end
return {meta[1], meta[2], redis.call('XRANGE', KEYS[2], '-', '+')}
";

/// Which of the two connections.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    Commands = 0,
    Notifications = 1,
}

const ROLES: [Role; 2] = [Role::Commands, Role::Notifications];

/// What the cluster's timers are for (inside [`Timer::Redis`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RedisTimer {
    /// The oldest command of this connection must be answered by now.
    Deadline(Role),
    /// Connect again.
    Retry(Role),
    /// Every [`TICK`]: ping idle connections, drop unused links.
    Tick,
}

/// Who waits for a publish's reply.
#[derive(Debug)]
pub enum Publisher {
    /// `POST /pub/..`: answered with the seq, or 503.
    Http { responder: Responder, target: Box<str> },
    /// A WebSocket's `pub` command (socket key): told only of a failure.
    Ws(usize),
}

/// What a command's reply is for.
#[derive(Debug)]
pub enum Pending {
    Publish { channel: Box<str>, from: Publisher },
    Load(Box<str>),
    Ping,
    Subscribe(Box<str>),
    Unsubscribe(Box<str>),
}

/// What the service must act on.
#[derive(Debug)]
pub enum ClusterEvent {
    /// A publish was applied (epoch, seq) or not (Redis unavailable, or refused it).
    Published { channel: Box<str>, from: Publisher, outcome: Result<(u32, u64), PublishFailed> },
    /// A channel's log as Redis has it: give it to the mirror.
    Loaded { channel: Box<str>, epoch: u32, last_seq: u64, messages: Vec<(u64, Vec<u8>)> },
    /// Publishes announced by Redis (`(epoch, seq, data)`, in order; several when they came
    /// in one read): append them to the mirror, and wake its waiters once.
    Notified { channel: Box<str>, notes: Vec<(u32, u64, Vec<u8>)> },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PublishFailed {
    /// Not connected, or the connection went down before the reply.
    Unavailable,
    /// Redis answered with an error.
    Refused,
}

/// A channel this node follows in Redis.
#[derive(Debug)]
struct Link {
    sub: Subscription,
    read: Read,
    /// Ticks in a row that found no local subscriber.
    unused_ticks: u8,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Subscription {
    /// `SUBSCRIBE` to be sent (the notifications connection is not ready) or sent.
    Pending,
    Active,
}

#[derive(Debug)]
enum Read {
    /// The mirror is up to date with the notifications (or nobody asked for the channel).
    Idle,
    /// The log is being read; notifications that come meanwhile wait here.
    InFlight { buffered: Vec<(u32, u64, Vec<u8>)>, overflowed: bool },
    /// To be read as soon as the commands connection is ready.
    Wanted,
}

/// Counters for /stats.
#[derive(Debug, Default, Clone, Copy)]
pub struct ClusterStats {
    pub reconnects_total: u64,
    pub timeouts_total: u64,
}

/// The cluster engine of one node: two connections, the links, the scripts.
pub struct Cluster {
    opts: RedisOptions,
    retain: usize,
    ttl_ms: u64,
    conns: [RedisConn<Pending>; 2],
    /// Per connection: its deadline timer, its retry timer, its next backoff, whether it has
    /// been ready once (to count reconnects).
    deadline: [Option<TimerId>; 2],
    retry: [Option<TimerId>; 2],
    backoff: [Duration; 2],
    was_ready: [bool; 2],
    /// Failed since it was last ready (its failure is logged once).
    failing: [bool; 2],
    links: HashMap<Box<str>, Link>,
    epochs: EpochSource,
    jitter: u64,
    publish_sha: String,
    load_sha: String,
    tick: Option<TimerId>,
    pub stats: ClusterStats,
    /// Events for the service, taken by [`Cluster::take_events`].
    events: Vec<ClusterEvent>,
}

fn sha1_hex(text: &str) -> String {
    sha1_smol::Sha1::from(text).digest().to_string()
}

impl Cluster {
    pub fn new(opts: RedisOptions, retain: usize, ttl_ms: u64, max_message: usize) -> Cluster {
        let mut auth: Vec<Vec<Vec<u8>>> = Vec::new();
        if let Some(pw) = &opts.password {
            auth.push(vec![b"AUTH".to_vec(), pw.as_bytes().to_vec()]);
        }
        let mut commands = auth.clone();
        if opts.db != 0 {
            commands.push(vec![b"SELECT".to_vec(), opts.db.to_string().into_bytes()]);
        }
        for script in [PUBLISH_SCRIPT, LOAD_SCRIPT] {
            commands.push(vec![b"SCRIPT".to_vec(), b"LOAD".to_vec(), script.as_bytes().to_vec()]);
        }
        // A reply is at most a channel's whole log: `retain` messages of `max_message` bytes
        // (and their IDs): the parser refuses anything announced larger. (At least 16 MiB per
        // string: a node with a larger `--max-message` must not break the others' streams.)
        let limits = ReplyLimits {
            max_bulk: max_message.max(16 << 20) + 64,
            max_elements: retain.max(16) + 16,
            max_depth: 4,
        };
        let seed = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(1, |d| d.as_nanos() as u64)
            ^ u64::from(std::process::id());
        Cluster {
            conns: [
                RedisConn::new(opts.addr, commands, limits, false),
                RedisConn::new(opts.addr, auth, limits, true),
            ],
            opts,
            retain,
            ttl_ms,
            deadline: [None, None],
            retry: [None, None],
            backoff: [FIRST_BACKOFF; 2],
            was_ready: [false; 2],
            failing: [false; 2],
            links: HashMap::new(),
            epochs: EpochSource::from_os(),
            jitter: seed | 1,
            publish_sha: sha1_hex(PUBLISH_SCRIPT),
            load_sha: sha1_hex(LOAD_SCRIPT),
            tick: None,
            stats: ClusterStats::default(),
            events: Vec::new(),
        }
    }

    /// Both connections are up.
    pub fn is_connected(&self) -> bool {
        self.conns.iter().all(RedisConn::is_ready)
    }

    /// Channels this node is subscribed to in Redis.
    pub fn subscribed(&self) -> usize {
        self.links.values().filter(|l| l.sub == Subscription::Active).count()
    }

    pub fn take_events(&mut self) -> Vec<ClusterEvent> {
        std::mem::take(&mut self.events)
    }

    /// Starts both connections and the tick (at start-up, from the loop).
    pub fn start(&mut self, ctx: &mut Ctx<'_, Tidings>) {
        for role in ROLES {
            self.connect(ctx, role);
        }
        self.tick = Some(ctx.set_repeating_timer(TICK, Timer::Redis(RedisTimer::Tick)));
    }

    /// Stops: closes both connections; what waited fails.
    pub fn stop(&mut self, ctx: &mut Ctx<'_, Tidings>) {
        if let Some(t) = self.tick.take() {
            ctx.cancel_timer(t);
        }
        for role in ROLES {
            if let Some(t) = self.retry[role as usize].take() {
                ctx.cancel_timer(t);
            }
            self.close(ctx, role);
        }
    }

    // ----- publishing ------------------------------------------------------------------------

    /// Sends a publish; its outcome comes back as [`ClusterEvent::Published`] (at once if
    /// Redis is unavailable).
    pub fn publish(&mut self, ctx: &mut Ctx<'_, Tidings>, channel: &str, data: &[u8], from: Publisher) {
        let epoch = render::format_epoch(self.epochs.next());
        let retain = self.retain.to_string();
        let ttl = self.ttl_ms.to_string();
        let notify = self.notify_channel(channel);
        let sha = self.publish_sha.clone();
        let argv: [&[u8]; 5] = [epoch.as_bytes(), data, retain.as_bytes(), ttl.as_bytes(), notify.as_bytes()];
        let pending = Pending::Publish { channel: channel.into(), from };
        if let Err(Pending::Publish { channel, from }) = self.script(ctx, &sha, channel, &argv, pending) {
            self.events.push(ClusterEvent::Published {
                channel,
                from,
                outcome: Err(PublishFailed::Unavailable),
            });
        }
    }

    // ----- following channels ----------------------------------------------------------------

    /// The mirror wants channel `name` (a subscriber came for it): subscribe if needed, and
    /// read it once subscribed.
    pub fn want(&mut self, ctx: &mut Ctx<'_, Tidings>, name: &str) {
        match self.links.get_mut(name) {
            Some(link) => {
                link.unused_ticks = 0;
                if link.sub == Subscription::Active && matches!(link.read, Read::Idle | Read::Wanted) {
                    self.load(ctx, name);
                }
            }
            None => {
                let link = Link { sub: Subscription::Pending, read: Read::Idle, unused_ticks: 0 };
                self.links.insert(name.into(), link);
                let notify = self.notify_channel(name);
                let _ = self.send(
                    ctx,
                    Role::Notifications,
                    &[b"SUBSCRIBE", notify.as_bytes()],
                    Pending::Subscribe(name.into()),
                );
            }
        }
    }

    /// The mirror missed something of `name` (a gap, another epoch): read it again.
    pub fn reload(&mut self, ctx: &mut Ctx<'_, Tidings>, name: &str) {
        if let Some(Read::Idle) = self.links.get(name).map(|l| &l.read) {
            self.load(ctx, name);
        }
    }

    fn load(&mut self, ctx: &mut Ctx<'_, Tidings>, name: &str) {
        let sha = self.load_sha.clone();
        let epoch = render::format_epoch(self.epochs.next());
        let ttl = self.ttl_ms.to_string();
        let read = match self.script(
            ctx,
            &sha,
            name,
            &[epoch.as_bytes(), ttl.as_bytes()],
            Pending::Load(name.into()),
        ) {
            Ok(()) => Read::InFlight { buffered: Vec::new(), overflowed: false },
            Err(_) => Read::Wanted,
        };
        if let Some(link) = self.links.get_mut(name) {
            link.read = read;
        }
    }

    /// Every [`TICK`]: ping idle connections; drop links nobody here has used for two ticks
    /// (`in_use` says whether the mirror has subscribers on a channel). Returns the channels
    /// dropped: the mirror must forget them (nothing will keep them up to date).
    pub fn on_tick(&mut self, ctx: &mut Ctx<'_, Tidings>, in_use: impl Fn(&str) -> bool) -> Vec<Box<str>> {
        for role in ROLES {
            if self.conns[role as usize].is_ready() && self.conns[role as usize].in_flight() == 0 {
                let _ = self.send(ctx, role, &[b"PING"], Pending::Ping);
            }
        }
        let mut unused = Vec::new();
        for (name, link) in self.links.iter_mut() {
            if in_use(name) || !matches!(link.read, Read::Idle) {
                link.unused_ticks = 0;
            } else {
                link.unused_ticks += 1;
                if link.unused_ticks >= 2 {
                    unused.push(name.clone());
                }
            }
        }
        for name in &unused {
            self.links.remove(name);
            let notify = self.notify_channel(name);
            let what = Pending::Unsubscribe(name.clone());
            let _ = self.send(ctx, Role::Notifications, &[b"UNSUBSCRIBE", notify.as_bytes()], what);
        }
        unused
    }

    // ----- the connections -------------------------------------------------------------------

    fn send(
        &mut self,
        ctx: &mut Ctx<'_, Tidings>,
        role: Role,
        args: &[&[u8]],
        what: Pending,
    ) -> Result<(), Pending> {
        let now = ctx.now_ms();
        let conn = &mut self.conns[role as usize];
        conn.send(args, what, now)?;
        if let Err(f) = conn.flush() {
            self.fail(ctx, role, &f.to_string());
            return Ok(()); // its outcome is already an event
        }
        self.arm_deadline(ctx, role);
        self.watch(ctx, role);
        Ok(())
    }

    /// `EVALSHA SHA 2 META LOG ARGV..`: one of our scripts on channel `name`'s keys.
    fn script(
        &mut self,
        ctx: &mut Ctx<'_, Tidings>,
        sha: &str,
        name: &str,
        argv: &[&[u8]],
        what: Pending,
    ) -> Result<(), Pending> {
        let (meta, log) = keys(name);
        let mut args: Vec<&[u8]> = vec![b"EVALSHA", sha.as_bytes(), b"2", meta.as_bytes(), log.as_bytes()];
        args.extend_from_slice(argv);
        self.send(ctx, Role::Commands, &args, what)
    }

    fn notify_channel(&self, name: &str) -> String {
        format!("tidings:{}:{name}", self.opts.db)
    }

    fn connect(&mut self, ctx: &mut Ctx<'_, Tidings>, role: Role) {
        let i = role as usize;
        let now = ctx.now_ms();
        if let Err(e) = self.conns[i].connect(now) {
            return self.fail(ctx, role, &e.to_string());
        }
        let (Some(fd), interest) = (self.conns[i].fd(), self.conns[i].interest()) else { return };
        match ctx.register(fd, interest, i) {
            Ok(token) => self.conns[i].registered(token),
            Err(e) => return self.fail(ctx, role, &format!("cannot watch the socket: {e}")),
        }
        self.arm_deadline(ctx, role);
    }

    fn watch(&mut self, ctx: &mut Ctx<'_, Tidings>, role: Role) {
        let conn = &self.conns[role as usize];
        if let Some(token) = conn.token() {
            let _ = ctx.reregister(token, conn.interest());
        }
    }

    /// Keeps the connection's one deadline timer armed for its oldest command.
    fn arm_deadline(&mut self, ctx: &mut Ctx<'_, Tidings>, role: Role) {
        let i = role as usize;
        if self.deadline[i].is_some() {
            return;
        }
        let oldest = match self.conns[i].state() {
            State::Connecting => Some(ctx.now_ms()),
            _ => self.conns[i].oldest(),
        };
        if let Some(sent) = oldest {
            let due = sent + self.opts.timeout.as_millis() as u64;
            let after = Duration::from_millis(due.saturating_sub(ctx.now_ms()));
            self.deadline[i] = Some(ctx.set_timer(after, Timer::Redis(RedisTimer::Deadline(role))));
        }
    }

    /// A socket of the cluster is ready (tag = its role).
    pub fn on_io(&mut self, ctx: &mut Ctx<'_, Tidings>, tag: usize, ev: Event) {
        let Some(&role) = ROLES.get(tag) else { return };
        let mut incoming = Vec::new();
        let result = self.conns[tag].ready(ev, &mut incoming);
        for item in incoming {
            self.handle(ctx, role, item);
        }
        match result {
            Ok(()) => self.watch(ctx, role),
            Err(f) => self.fail(ctx, role, &f.to_string()),
        }
    }

    fn handle(&mut self, ctx: &mut Ctx<'_, Tidings>, role: Role, item: Incoming<Pending>) {
        match item {
            Incoming::Ready => self.became_ready(ctx, role),
            Incoming::Push(reply) => self.notification(reply),
            Incoming::Reply(what, reply) => {
                // The front command is answered: the deadline moves to the next one.
                if let Some(t) = self.deadline[role as usize].take() {
                    ctx.cancel_timer(t);
                }
                self.arm_deadline(ctx, role);
                self.reply(ctx, what, reply);
            }
        }
    }

    fn became_ready(&mut self, ctx: &mut Ctx<'_, Tidings>, role: Role) {
        let i = role as usize;
        self.backoff[i] = FIRST_BACKOFF;
        if self.was_ready[i] {
            self.stats.reconnects_total += 1;
        }
        self.was_ready[i] = true;
        self.failing[i] = false;
        if let Some(t) = self.deadline[i].take() {
            ctx.cancel_timer(t);
        }
        self.arm_deadline(ctx, role);
        if self.is_connected() {
            crate::log(format_args!("redis {}: connected", self.opts.addr));
        }
        let names: Vec<Box<str>> = self.links.keys().cloned().collect();
        match role {
            // Subscribe again to everything; each confirmation reads its channel again.
            Role::Notifications => {
                for name in names {
                    let notify = self.notify_channel(&name);
                    let _ =
                        self.send(ctx, role, &[b"SUBSCRIBE", notify.as_bytes()], Pending::Subscribe(name));
                }
            }
            // Reads that could not be sent (or failed) go now.
            Role::Commands => {
                for name in names {
                    let link = &self.links[&name];
                    if link.sub == Subscription::Active && !matches!(link.read, Read::InFlight { .. }) {
                        self.load(ctx, &name);
                    }
                }
            }
        }
    }

    fn reply(&mut self, ctx: &mut Ctx<'_, Tidings>, what: Pending, reply: Reply) {
        // Redis forgot our scripts (SCRIPT FLUSH): a new connection loads them again.
        let noscript = matches!(&reply, Reply::Error(e) if e.starts_with(b"NOSCRIPT"));
        match what {
            Pending::Ping | Pending::Unsubscribe(_) => {}
            Pending::Subscribe(name) => {
                if let Some(link) = self.links.get_mut(&name) {
                    link.sub = Subscription::Active;
                    // Read it (again): what was published before the subscription took is
                    // in the log, what comes after is announced.
                    if !matches!(link.read, Read::InFlight { .. }) {
                        self.load(ctx, &name);
                    }
                }
            }
            Pending::Publish { channel, from } => {
                let outcome = match &reply {
                    Reply::Array(Some(items)) if items.len() == 2 => {
                        match (items[0].as_bytes().and_then(parse_epoch), items[1].as_int()) {
                            (Some(epoch), Some(seq)) if seq > 0 => Ok((epoch, seq as u64)),
                            _ => Err(PublishFailed::Refused),
                        }
                    }
                    _ => Err(PublishFailed::Refused),
                };
                if let (Err(_), Reply::Error(e)) = (&outcome, &reply) {
                    crate::log(format_args!("redis refused a publish: {}", String::from_utf8_lossy(e)));
                }
                self.events.push(ClusterEvent::Published { channel, from, outcome });
            }
            Pending::Load(name) => self.loaded(ctx, name, reply),
        }
        if noscript {
            self.fail(ctx, Role::Commands, "Redis does not have our scripts");
        }
    }

    fn loaded(&mut self, ctx: &mut Ctx<'_, Tidings>, name: Box<str>, reply: Reply) {
        let Some(link) = self.links.get_mut(&name) else { return };
        let (buffered, overflowed) = match std::mem::replace(&mut link.read, Read::Idle) {
            Read::InFlight { buffered, overflowed } => (buffered, overflowed),
            _ => (Vec::new(), false),
        };
        let Some((epoch, last_seq, messages)) = parse_log(reply) else {
            crate::log(format_args!("redis: unexpected reply reading channel {name}"));
            link.read = Read::Wanted;
            return;
        };
        self.events.push(ClusterEvent::Loaded { channel: name.clone(), epoch, last_seq, messages });
        if !buffered.is_empty() {
            self.events.push(ClusterEvent::Notified { channel: name.clone(), notes: buffered });
        }
        if overflowed {
            self.load(ctx, &name);
        }
    }

    /// `["message", "tidings:DB:C", "EPOCH:SEQ:DATA"]`.
    fn notification(&mut self, reply: Reply) {
        let Reply::Array(Some(mut items)) = reply else { return };
        let (Some(Reply::Bulk(Some(payload))), Some(Reply::Bulk(Some(chan)))) = (items.pop(), items.pop())
        else {
            return;
        };
        let prefix = format!("tidings:{}:", self.opts.db);
        let Some(name) = chan.strip_prefix(prefix.as_bytes()).and_then(|n| std::str::from_utf8(n).ok())
        else {
            return;
        };
        let Some((epoch, seq, data)) = parse_notification(&payload) else { return };
        let Some(link) = self.links.get_mut(name) else { return };
        match &mut link.read {
            Read::InFlight { buffered, overflowed } => {
                if buffered.len() < MAX_BUFFERED {
                    buffered.push((epoch, seq, data.to_vec()));
                } else {
                    *overflowed = true;
                }
            }
            Read::Idle | Read::Wanted => match self.events.last_mut() {
                // The next of a burst on the same channel: one wake for all of them.
                Some(ClusterEvent::Notified { channel, notes }) if **channel == *name => {
                    notes.push((epoch, seq, data.to_vec()))
                }
                _ => self.events.push(ClusterEvent::Notified {
                    channel: name.into(),
                    notes: vec![(epoch, seq, data.to_vec())],
                }),
            },
        }
    }

    /// A timer of the cluster fired.
    pub fn on_timer(&mut self, ctx: &mut Ctx<'_, Tidings>, id: TimerId, timer: RedisTimer) {
        match timer {
            RedisTimer::Deadline(role) => {
                let i = role as usize;
                if self.deadline[i] != Some(id) {
                    return;
                }
                self.deadline[i] = None;
                let timeout = self.opts.timeout.as_millis() as u64;
                let late = match self.conns[i].state() {
                    State::Connecting => true,
                    _ => self.conns[i].oldest().is_some_and(|sent| sent + timeout <= ctx.now_ms()),
                };
                if late {
                    self.stats.timeouts_total += 1;
                    self.fail(ctx, role, &format!("no answer within {} ms", timeout));
                } else {
                    self.arm_deadline(ctx, role);
                }
            }
            RedisTimer::Retry(role) => {
                if self.retry[role as usize] == Some(id) {
                    self.retry[role as usize] = None;
                    self.connect(ctx, role);
                }
            }
            RedisTimer::Tick => {}
        }
    }

    fn close(&mut self, ctx: &mut Ctx<'_, Tidings>, role: Role) -> Vec<Pending> {
        let i = role as usize;
        if let Some(t) = self.deadline[i].take() {
            ctx.cancel_timer(t);
        }
        if let Some(token) = self.conns[i].token() {
            let _ = ctx.deregister(token);
        }
        self.conns[i].down()
    }

    /// The connection failed: close it, fail what waited, come back after a backoff.
    fn fail(&mut self, ctx: &mut Ctx<'_, Tidings>, role: Role, why: &str) {
        // One line per outage, not one per retry.
        if !self.failing[role as usize] {
            let what = if self.was_ready[role as usize] { "connection down" } else { "cannot connect" };
            let conn = match role {
                Role::Commands => "commands",
                Role::Notifications => "notifications",
            };
            crate::log(format_args!("redis {} ({conn}): {what}: {why} (retrying)", self.opts.addr));
            self.failing[role as usize] = true;
        }
        for what in self.close(ctx, role) {
            match what {
                Pending::Publish { channel, from } => self.events.push(ClusterEvent::Published {
                    channel,
                    from,
                    outcome: Err(PublishFailed::Unavailable),
                }),
                Pending::Load(name) => {
                    if let Some(link) = self.links.get_mut(&name) {
                        link.read = Read::Wanted;
                    }
                }
                Pending::Subscribe(_) | Pending::Unsubscribe(_) | Pending::Ping => {}
            }
        }
        if role == Role::Notifications {
            // Nothing is announced to this node until it subscribes again.
            for link in self.links.values_mut() {
                link.sub = Subscription::Pending;
                if let Read::InFlight { overflowed, .. } = &mut link.read {
                    *overflowed = true;
                }
            }
        }
        self.schedule_retry(ctx, role);
    }

    fn schedule_retry(&mut self, ctx: &mut Ctx<'_, Tidings>, role: Role) {
        let i = role as usize;
        if self.retry[i].is_some() {
            return;
        }
        let base = self.backoff[i].as_millis() as u64;
        // xorshift: the jitter only has to differ between nodes.
        self.jitter ^= self.jitter << 13;
        self.jitter ^= self.jitter >> 7;
        self.jitter ^= self.jitter << 17;
        let delay = base / 2 + self.jitter % (base / 2 + 1);
        self.backoff[i] = (self.backoff[i] * 2).min(MAX_BACKOFF);
        self.retry[i] =
            Some(ctx.set_timer(Duration::from_millis(delay), Timer::Redis(RedisTimer::Retry(role))));
    }
}

/// The keys of channel `name`.
fn keys(name: &str) -> (String, String) {
    (format!("tidings:{name}:meta"), format!("tidings:{name}:log"))
}

fn parse_epoch(b: &[u8]) -> Option<u32> {
    std::str::from_utf8(b).ok().and_then(crate::service::parse_epoch)
}

/// `EPOCH:SEQ:DATA`.
fn parse_notification(payload: &[u8]) -> Option<(u32, u64, &[u8])> {
    let epoch = parse_epoch(payload.get(..8)?)?;
    let rest = payload.get(8..)?.strip_prefix(b":")?;
    let colon = rest.iter().position(|&b| b == b':')?;
    let seq = std::str::from_utf8(&rest[..colon]).ok().and_then(crate::service::parse_u64)?;
    Some((epoch, seq, &rest[colon + 1..]))
}

/// The load script's reply: `[epoch|nil, seq, [[ "SEQ-0", ["d", data]], ..]]`.
#[allow(clippy::type_complexity)]
fn parse_log(reply: Reply) -> Option<(u32, u64, Vec<(u64, Vec<u8>)>)> {
    let Reply::Array(Some(items)) = reply else { return None };
    let [epoch, seq, entries]: [Reply; 3] = items.try_into().ok()?;
    let epoch = match epoch {
        Reply::Bulk(None) => 0,
        e => parse_epoch(e.as_bytes()?)?,
    };
    let last_seq = u64::try_from(seq.as_int()?).ok()?;
    let Reply::Array(Some(entries)) = entries else { return None };
    let mut messages = Vec::with_capacity(entries.len());
    for entry in entries {
        let Reply::Array(Some(parts)) = entry else { return None };
        let [id, fields]: [Reply; 2] = parts.try_into().ok()?;
        let id = std::str::from_utf8(id.as_bytes()?).ok()?;
        let seq = id.strip_suffix("-0").and_then(crate::service::parse_u64)?;
        let Reply::Array(Some(fields)) = fields else { return None };
        let [_, data]: [Reply; 2] = fields.try_into().ok()?;
        let Reply::Bulk(Some(data)) = data else { return None };
        messages.push((seq, data));
    }
    Some((epoch, last_seq, messages))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bulk(b: &[u8]) -> Reply {
        Reply::Bulk(Some(b.to_vec()))
    }

    #[test]
    fn notifications_and_logs_parse() {
        assert_eq!(parse_notification(b"0000abcd:12:a:b"), Some((0xabcd, 12, &b"a:b"[..])));
        assert_eq!(parse_notification(b"0000abcd:12:"), Some((0xabcd, 12, &b""[..])));
        for bad in [&b"0000abcd:12"[..], b"0000abc:12:x", b"0000abcd:x:y", b"", b"0000abcd::x"] {
            assert_eq!(parse_notification(bad), None, "{bad:?}");
        }
        let entry = |seq: &str, data: &[u8]| {
            Reply::Array(Some(vec![bulk(seq.as_bytes()), Reply::Array(Some(vec![bulk(b"d"), bulk(data)]))]))
        };
        let reply = Reply::Array(Some(vec![
            bulk(b"0000abcd"),
            bulk(b"7"),
            Reply::Array(Some(vec![entry("6-0", b"x"), entry("7-0", b"y")])),
        ]));
        assert_eq!(parse_log(reply), Some((0xabcd, 7, vec![(6, b"x".to_vec()), (7, b"y".to_vec())])));
        let none = Reply::Array(Some(vec![Reply::Bulk(None), Reply::Integer(0), Reply::Array(Some(vec![]))]));
        assert_eq!(parse_log(none), Some((0, 0, vec![])));
        assert_eq!(parse_log(Reply::Integer(1)), None);
    }

    #[test]
    fn scripts_have_the_sha_redis_will_give() {
        // SCRIPT LOAD answers the SHA-1 of the text; EVALSHA relies on computing the same.
        assert_eq!(sha1_hex("return 1"), "e0e1f9fabfc9d4800c877a703b823ac0578ff8db");
    }
}
