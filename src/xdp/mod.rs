//! The XDP fast path's loader: loads the committed BPF object (`stun.bpf.o`, built from
//! `stun.bpf.c` by `scripts/build-xdp.sh`), fills its config map, attaches it to interfaces in
//! native or generic mode, reads its per-CPU counters, and runs it on test frames
//! (BPF_PROG_TEST_RUN). The program answers the plain Binding request (header only, with the
//! magic cookie) with XDP_TX and passes everything else, with a counted [`Reason`], to the
//! kernel's UDP stack and so to the workers: it is an accelerator, never the only place a
//! request is answered.
//!
//! Must not know about the configuration file or the handler: it takes plain values (listen addresses,
//! interface names, a [`Mode`]). Kernel floor: 5.8 for CAP_BPF (before: CAP_SYS_ADMIN), 5.9 for
//! XDP bpf_link attachment (older kernels fall back to netlink inside aya), 5.8 for
//! `bpf_xdp_adjust_tail` growth on every driver; before 5.11 the memlock rlimit must allow the
//! maps.

// The one `unsafe` here is the `aya::Pod` promise for the limit map's value (DESIGN: `unsafe`
// only in src/io/ and the XDP loader, each with a SAFETY comment).
#![allow(unsafe_code)]

use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use aya::Ebpf;
use aya::maps::lpm_trie::{Key, LpmTrie};
use aya::maps::{Array, MapData, PerCpuArray};
use aya::programs::xdp::XdpLinkId;
use aya::programs::{ProgramError, TestRun, TestRunOptions, Xdp, XdpMode};

/// The committed object, 8-byte aligned as the ELF parser wants it.
static OBJECT: &[u8] = aya::include_bytes_aligned!("stun.bpf.o");

/// The most listen addresses (address and UDP port) the program answers on (`MAX_LISTEN` in
/// the C source).
pub const MAX_LISTEN: usize = 8;

/// `struct config` of the C source: `enabled`, then per listen slot its kind (port | family
/// << 16 | wildcard << 24; 0: unused) and four address words in network order.
type ConfigValue = [u32; 1 + MAX_LISTEN * 5];

const CONFIG_MAP: &str = "stun_config";
const LIMIT_CONFIG_MAP: &str = "limit_config";
const LIMIT_LISTED_MAP: &str = "limit_listed";
const LIMIT_CLOCK_MAP: &str = "limit_clock";

/// The prefix levels the fast path's limiter counts per family (`LIMIT_LEVELS`).
pub const LIMIT_LEVELS: usize = 4;
/// The most allow and deny prefixes the fast path knows (`LIMIT_LISTED_ENTRIES`); more make
/// [`Fastpath::set_limit`] fail (and the caller fall back to the workers alone).
pub const LIMIT_LISTED_MAX: usize = 4096;

/// The fast path's share of the reflection defence (`limit.bpf.h`): a source is answered
/// while every prefix level is inside its Binding budget for the current window, and passed
/// to the workers (whose limiter decides) when over budget or listed.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct LimitSettings {
    /// 0 off (answer without counting), 1 enforce (pass over-budget sources to the workers),
    /// 2 dry run (count, answer everything).
    pub mode: u32,
    /// The window budgets are counted over.
    pub window: Duration,
    /// Answers per window of each level: IPv4 then IPv6, narrowest prefix first.
    pub budget: [[u64; LIMIT_LEVELS]; 2],
    /// The prefix length of each level: IPv4 (/32 /24 /20 /18) then IPv6 (/128 /64 /56 /48).
    pub prefix_len: [[u32; LIMIT_LEVELS]; 2],
    /// Allow and deny prefixes: sources in them are passed to the workers.
    pub listed: Vec<(IpAddr, u8)>,
}

/// `struct limit_config` of `limit.bpf.h`.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
struct LimitConfigValue {
    mode: u32,
    listed: u32,
    window_ms: u32,
    pad: u32,
    seed: [u64; 5],
    budget: [[u32; LIMIT_LEVELS]; 2],
    mask: [[[u32; 4]; LIMIT_LEVELS]; 2],
}

// SAFETY: `LimitConfigValue` is `repr(C)`, made only of integers, and has no padding (4 × 4 + 40
// + 32 + 128 bytes, every field at its natural alignment), so any bit pattern is a valid value
// and its bytes are exactly the C struct the map holds.
unsafe impl aya::Pod for LimitConfigValue {}

/// The largest budget per window a slot counts to (its count is 32 bits; larger budgets are
/// this, over two billion answers per window, far beyond any line rate).
pub const LIMIT_BUDGET_MAX: u64 = 1 << 31;
const COUNTER_MAP: &str = "stun_counters";

/// A program of the object.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Program {
    /// `xdp_stun`: the fast path.
    Stun,
    /// `xdp_pass`: returns XDP_PASS and does nothing else. The cost baseline, and what a veth
    /// peer needs attached to receive XDP_TX frames (drivers/net/veth.c schedules the peer's
    /// NAPI only when it has a program).
    Pass,
}

impl Program {
    const fn name(self) -> &'static str {
        match self {
            Program::Stun => "xdp_stun",
            Program::Pass => "xdp_pass",
        }
    }
}

/// How to attach.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Mode {
    /// Native, and generic where the driver has no XDP support.
    #[default]
    Auto,
    /// In the driver (XDP_FLAGS_DRV_MODE): the fast one, on drivers that support it.
    Native,
    /// In the kernel's receive path on an skb (XDP_FLAGS_SKB_MODE): works on every interface,
    /// and is the right mode on veth (native mode on veth needs an XDP program on the peer, and
    /// a locally sent IPv4 packet rarely has the tailroom to grow).
    Generic,
}

impl Mode {
    /// The label: `auto`, `native` or `generic`.
    pub const fn label(self) -> &'static str {
        match self {
            Mode::Auto => "auto",
            Mode::Native => "native",
            Mode::Generic => "generic",
        }
    }
}

/// The program's verdict for a frame (`enum xdp_action`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Verdict {
    /// XDP_ABORTED: a program error (the frame is dropped, `xdp:xdp_exception` fires).
    Aborted,
    /// XDP_DROP.
    Drop,
    /// XDP_PASS: on to the kernel's stack.
    Pass,
    /// XDP_TX: the frame, rewritten, goes back out of the interface it came in on.
    Tx,
    /// XDP_REDIRECT.
    Redirect,
    /// Anything else (the kernel treats it as ABORTED).
    Other(u32),
}

impl From<u32> for Verdict {
    fn from(v: u32) -> Verdict {
        match v {
            0 => Verdict::Aborted,
            1 => Verdict::Drop,
            2 => Verdict::Pass,
            3 => Verdict::Tx,
            4 => Verdict::Redirect,
            v => Verdict::Other(v),
        }
    }
}

/// The counters' first index: the frame's family (`enum family` in the C source).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Family {
    /// Not IP (ARP, VLAN-tagged, …) or too short to tell.
    None = 0,
    /// IPv4.
    V4 = 1,
    /// IPv6.
    V6 = 2,
}

impl Family {
    /// Every family, in index order.
    pub const ALL: [Family; FAMILIES] = [Family::None, Family::V4, Family::V6];

    /// The metric label: `none`, `ipv4`, `ipv6`.
    pub const fn label(self) -> &'static str {
        match self {
            Family::None => "none",
            Family::V4 => "ipv4",
            Family::V6 => "ipv6",
        }
    }
}

/// The number of families.
pub const FAMILIES: usize = 3;

/// The counters' second index: answered, or why the frame was passed (`enum reason` in the C
/// source; the counter map's index is `family * REASONS + reason`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Reason {
    /// Answered with XDP_TX.
    Answered = 0,
    /// The config map's `enabled` is 0.
    Disabled = 1,
    /// Not IPv4 or IPv6 (VLAN tags included), or an IP version field that disagrees with the
    /// EtherType.
    NotIp = 2,
    /// Not UDP (IPv6 extension headers included).
    NotUdp = 3,
    /// An IPv4 fragment (MF or an offset) or an IPv6 fragment header.
    Fragment = 4,
    /// IPv4 with options (IHL ≠ 5).
    IpOptions = 5,
    /// A destination (address and UDP port) that is not a fast-pathed listener's.
    Destination = 6,
    /// The frame ends before its headers or before the length its headers announce, or the
    /// UDP payload is shorter than a STUN header.
    TooShort = 7,
    /// Not STUN with the magic cookie (RFC 3489 classic included): the top bits or the cookie.
    NotStun = 8,
    /// STUN, but not a Binding request (indications, responses, other methods).
    NotBindingRequest = 9,
    /// A Binding request with attributes: the workers answer it.
    HasAttributes = 10,
    /// The IP, UDP and STUN lengths disagree.
    LengthMismatch = 11,
    /// A UDP checksum that does not verify (the kernel drops the datagram).
    BadChecksum = 12,
    /// IPv6 with a zero UDP checksum, invalid by RFC 8200 §8.1 (the kernel drops it).
    ZeroChecksum = 13,
    /// An IPv4 header checksum that does not verify (the kernel drops the packet).
    BadIpChecksum = 14,
    /// A source that cannot receive (port 0, 0/8, multicast, reserved; ::, ff00::/8), or a
    /// destination that is not one host: never answered from XDP.
    Bogon = 15,
    /// `bpf_xdp_adjust_head` could not grow the frame (or `bpf_xdp_adjust_tail` cut its
    /// padding): the workers answer.
    GrowFailed = 16,
    /// A prefix of the source is over its Binding budget ([`LimitSettings`]): the workers'
    /// limiter decides (drop, or leak the minimal answer).
    Limited = 17,
    /// The source is in an allow or deny prefix: the workers decide.
    Listed = 18,
    /// A request whose only attribute is a FINGERPRINT that does not verify (the workers drop
    /// it, RFC 8489 §7.3).
    BadFingerprint = 19,
}

/// The number of reasons.
pub const REASONS: usize = 20;

impl Reason {
    /// Every reason, in index order.
    pub const ALL: [Reason; REASONS] = [
        Reason::Answered,
        Reason::Disabled,
        Reason::NotIp,
        Reason::NotUdp,
        Reason::Fragment,
        Reason::IpOptions,
        Reason::Destination,
        Reason::TooShort,
        Reason::NotStun,
        Reason::NotBindingRequest,
        Reason::HasAttributes,
        Reason::LengthMismatch,
        Reason::BadChecksum,
        Reason::ZeroChecksum,
        Reason::BadIpChecksum,
        Reason::Bogon,
        Reason::GrowFailed,
        Reason::Limited,
        Reason::Listed,
        Reason::BadFingerprint,
    ];

    /// The metric label (snake case, as in the C source's `R_*` names).
    pub const fn label(self) -> &'static str {
        match self {
            Reason::Answered => "answered",
            Reason::Disabled => "disabled",
            Reason::NotIp => "not_ip",
            Reason::NotUdp => "not_udp",
            Reason::Fragment => "fragment",
            Reason::IpOptions => "ip_options",
            Reason::Destination => "destination",
            Reason::TooShort => "too_short",
            Reason::NotStun => "not_stun",
            Reason::NotBindingRequest => "not_binding_request",
            Reason::HasAttributes => "has_attributes",
            Reason::LengthMismatch => "length_mismatch",
            Reason::BadChecksum => "bad_checksum",
            Reason::ZeroChecksum => "zero_checksum",
            Reason::BadIpChecksum => "bad_ip_checksum",
            Reason::Bogon => "bogon",
            Reason::GrowFailed => "grow_failed",
            Reason::Limited => "limited",
            Reason::Listed => "listed",
            Reason::BadFingerprint => "bad_fingerprint",
        }
    }
}

/// The program's counters, summed over CPUs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Counters(pub [[u64; REASONS]; FAMILIES]);

impl Counters {
    /// Frames of `family` counted under `reason`.
    pub const fn get(&self, family: Family, reason: Reason) -> u64 {
        self.0[family as usize][reason as usize]
    }

    /// Every nonzero counter that differs from `before`'s, as (family, reason, delta).
    pub fn since(&self, before: &Counters) -> Vec<(Family, Reason, u64)> {
        let mut out = Vec::new();
        for family in Family::ALL {
            for reason in Reason::ALL {
                let delta = self.get(family, reason).wrapping_sub(before.get(family, reason));
                if delta != 0 {
                    out.push((family, reason, delta));
                }
            }
        }
        out
    }
}

/// What the exporter reads of a running fast path: its counters and where it is attached.
#[derive(Debug, Clone, Default)]
pub struct XdpView {
    /// The program's counters, summed over CPUs.
    pub counters: Counters,
    /// (interface, mode: `native` or `generic`) for each attachment.
    pub attached: Vec<(String, &'static str)>,
}

/// What failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    /// Parsing the object or creating its maps.
    Open,
    /// Loading a program (the verifier; its log goes to the `tracing` warning).
    Load,
    /// No listen address, more than [`MAX_LISTEN`], or one with port 0.
    Listen,
    /// Writing the config map.
    Config,
    /// Reading the counter map.
    Counters,
    /// No interface of that name.
    Interface,
    /// Attaching to an interface.
    Attach,
    /// BPF_PROG_TEST_RUN.
    TestRun,
}

/// A failure of the fast path: the step, and the errno where the kernel gave one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct XdpError {
    /// What failed.
    pub step: Step,
    /// The errno, when a syscall failed.
    pub errno: Option<i32>,
}

impl XdpError {
    /// Whether it failed for want of privileges (EPERM, EACCES): the fast path needs
    /// CAP_BPF and CAP_NET_ADMIN (kernel ≥ 5.8; CAP_SYS_ADMIN before).
    pub const fn is_permission(&self) -> bool {
        matches!(self.errno, Some(libc::EPERM | libc::EACCES))
    }

    fn new(step: Step, errno: Option<i32>) -> XdpError {
        XdpError { step, errno }
    }

    /// The step, with the first errno found in `error`'s chain.
    fn from_chain(step: Step, error: &(dyn std::error::Error + 'static)) -> XdpError {
        let mut cause = Some(error);
        while let Some(e) = cause {
            if let Some(io) = e.downcast_ref::<std::io::Error>() {
                return XdpError::new(step, io.raw_os_error());
            }
            cause = e.source();
        }
        XdpError::new(step, None)
    }
}

impl fmt::Display for XdpError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let step = match self.step {
            Step::Open => "opening the BPF object",
            Step::Load => "loading the XDP program",
            Step::Listen => "the listen addresses (1 to 8, no port 0)",
            Step::Config => "writing the XDP config map",
            Step::Counters => "reading the XDP counters",
            Step::Interface => "finding the interface",
            Step::Attach => "attaching the XDP program",
            Step::TestRun => "BPF_PROG_TEST_RUN",
        };
        write!(f, "xdp: {step} failed")?;
        if let Some(errno) = self.errno {
            write!(f, ": {}", std::io::Error::from_raw_os_error(errno))?;
            if self.is_permission() {
                write!(f, " (needs CAP_BPF and CAP_NET_ADMIN)")?;
            }
        }
        Ok(())
    }
}

impl std::error::Error for XdpError {}

/// The loaded object: both programs verified and loaded, the config map filled. Dropping it
/// detaches every attachment (they are bpf_links, or netlink attachments aya removes).
pub struct Fastpath {
    ebpf: Ebpf,
    /// The config map, taken out of `ebpf` (writing needs it owned).
    config_map: Array<MapData, ConfigValue>,
    /// What it holds: `enabled`, then the listen addresses.
    config: ConfigValue,
    /// The limiter's hash keys: random per load, kept across [`Fastpath::set_limit`] so that a
    /// reload keeps the counts where they are.
    seed: [u64; 5],
    links: Vec<(Program, XdpLinkId)>,
}

impl Fastpath {
    /// Loads the object, verifies and loads both programs, and enables the fast path for
    /// `listen` (1 to [`MAX_LISTEN`] addresses, none with port 0; an unspecified address is
    /// every address of its family). Needs CAP_BPF (and CAP_NET_ADMIN to attach).
    pub fn load(listen: &[SocketAddr]) -> Result<Fastpath, XdpError> {
        let mut ebpf = Ebpf::load(OBJECT).map_err(|e| XdpError::from_chain(Step::Open, &e))?;
        for program in [Program::Stun, Program::Pass] {
            let xdp = xdp_mut(&mut ebpf, program)?;
            if let Err(e) = xdp.load() {
                if let ProgramError::LoadError { verifier_log, .. } = &e {
                    tracing::warn!(program = program.name(), "xdp: the verifier refused the program:\n{verifier_log}");
                }
                return Err(XdpError::from_chain(Step::Load, &e));
            }
        }
        let map = ebpf.take_map(CONFIG_MAP).ok_or(XdpError::new(Step::Config, None))?;
        let config_map = Array::try_from(map).map_err(|e| XdpError::from_chain(Step::Config, &e))?;
        let mut config: ConfigValue = [0; 1 + MAX_LISTEN * 5];
        config[0] = 1;
        // RandomState's keys are random per process and per instance: nobody outside can aim a
        // collision between a victim's prefix and their own.
        let keys = std::collections::hash_map::RandomState::new();
        let seed = [0u8, 1, 2, 3, 4].map(|i| std::hash::BuildHasher::hash_one(&keys, i));
        let mut fastpath = Fastpath { ebpf, config_map, config, seed, links: Vec::new() };
        fastpath.set_listen(listen)?;
        Ok(fastpath)
    }

    /// Sets the fast path's rate limit (from `[limit]`; see [`LimitSettings`]): replaces the
    /// budgets and the listed prefixes. Counts already in the table are kept. Budgets above
    /// [`LIMIT_BUDGET_MAX`] count as that; the window is counted in whole milliseconds (at
    /// least one, at most 2^31).
    pub fn set_limit(&mut self, limit: &LimitSettings) -> Result<(), XdpError> {
        if limit.listed.len() > LIMIT_LISTED_MAX {
            return Err(XdpError::new(Step::Config, Some(libc::E2BIG)));
        }
        let budget = limit.budget.map(|levels| levels.map(|b| b.min(LIMIT_BUDGET_MAX) as u32));
        let value = LimitConfigValue {
            mode: limit.mode,
            listed: u32::try_from(limit.listed.len()).unwrap_or(u32::MAX),
            window_ms: limit.window.as_millis().clamp(1, 1 << 31) as u32,
            pad: 0,
            seed: self.seed,
            budget,
            mask: limit.prefix_len.map(|levels| levels.map(prefix_mask)),
        };
        let map = self.ebpf.map_mut(LIMIT_CONFIG_MAP).ok_or(XdpError::new(Step::Config, None))?;
        let mut config: Array<&mut MapData, LimitConfigValue> =
            Array::try_from(map).map_err(|e| XdpError::from_chain(Step::Config, &e))?;
        config.set(0, value, 0).map_err(|e| XdpError::from_chain(Step::Config, &e))?;
        let map = self.ebpf.map_mut(LIMIT_LISTED_MAP).ok_or(XdpError::new(Step::Config, None))?;
        let mut listed: LpmTrie<&mut MapData, [u8; 16], u8> =
            LpmTrie::try_from(map).map_err(|e| XdpError::from_chain(Step::Config, &e))?;
        let old: Vec<Key<[u8; 16]>> = listed.keys().filter_map(Result::ok).collect();
        for key in &old {
            let _ = listed.remove(key);
        }
        for &(ip, len) in &limit.listed {
            // IPv4 as IPv4-mapped IPv6, as the program looks it up.
            let (bytes, len) = match ip {
                IpAddr::V4(v4) => (v4.to_ipv6_mapped().octets(), u32::from(len) + 96),
                IpAddr::V6(v6) => (v6.octets(), u32::from(len)),
            };
            listed.insert(&Key::new(len, bytes), 1, 0).map_err(|e| XdpError::from_chain(Step::Config, &e))?;
        }
        Ok(())
    }

    /// Sets the limiter's clock (`limit.bpf.h`: the program reads no clock of its own) to
    /// `ms` milliseconds of a monotonic clock; only differences count, modulo 2^32. stunedge's
    /// serve loop sets it every 50 ms; while it is not set, windows do not restart.
    pub fn set_clock(&mut self, ms: u64) -> Result<(), XdpError> {
        let map = self.ebpf.map_mut(LIMIT_CLOCK_MAP).ok_or(XdpError::new(Step::Config, None))?;
        let mut clock: Array<&mut MapData, u32> =
            Array::try_from(map).map_err(|e| XdpError::from_chain(Step::Config, &e))?;
        clock.set(0, ms as u32, 0).map_err(|e| XdpError::from_chain(Step::Config, &e))
    }

    /// Answers on `listen` from now on (1 to [`MAX_LISTEN`] addresses, none with port 0; an
    /// unspecified address is every address of its family), keeping `enabled`.
    pub fn set_listen(&mut self, listen: &[SocketAddr]) -> Result<(), XdpError> {
        if listen.is_empty() || listen.len() > MAX_LISTEN || listen.iter().any(|a| a.port() == 0) {
            return Err(XdpError::new(Step::Listen, Some(libc::EINVAL)));
        }
        self.config[1..].fill(0);
        for (slot, addr) in self.config[1..].chunks_exact_mut(5).zip(listen) {
            let (family, octets) = match addr.ip() {
                IpAddr::V4(ip) => (4, ip.octets().to_vec()),
                IpAddr::V6(ip) => (6, ip.octets().to_vec()),
            };
            let wildcard = u32::from(addr.ip().is_unspecified());
            slot[0] = u32::from(addr.port()) | family << 16 | wildcard << 24;
            // Network order, as the program compares them with the packet's (IPv4: the first).
            for (word, b) in slot[1..].iter_mut().zip(octets.chunks_exact(4)) {
                *word = u32::from_ne_bytes([b[0], b[1], b[2], b[3]]);
            }
        }
        self.write_config()
    }

    /// Turns the fast path on or off without detaching: off passes every frame (counted under
    /// [`Reason::Disabled`]).
    pub fn set_enabled(&mut self, on: bool) -> Result<(), XdpError> {
        self.config[0] = u32::from(on);
        self.write_config()
    }

    fn write_config(&mut self) -> Result<(), XdpError> {
        self.config_map.set(0, self.config, 0).map_err(|e| XdpError::from_chain(Step::Config, &e))
    }

    /// Attaches the fast path to `ifname` in `mode`; the mode it runs in (never `Auto`).
    pub fn attach(&mut self, ifname: &str, mode: Mode) -> Result<Mode, XdpError> {
        self.attach_program(Program::Stun, ifname, mode)
    }

    /// Attaches `program` to `ifname` in `mode` (`Auto`: native, then generic); the mode it runs
    /// in. [`Program::Pass`] is for the far end of a veth pair (see [`Program`]).
    pub fn attach_program(&mut self, program: Program, ifname: &str, mode: Mode) -> Result<Mode, XdpError> {
        let xdp = xdp_mut(&mut self.ebpf, program)?;
        // aya resolves the name with if_nametoindex in the calling thread's network namespace.
        let (id, used) = match mode {
            Mode::Native => (xdp.attach(ifname, XdpMode::Driver), Mode::Native),
            Mode::Generic => (xdp.attach(ifname, XdpMode::Skb), Mode::Generic),
            Mode::Auto => match xdp.attach(ifname, XdpMode::Driver) {
                Ok(id) => (Ok(id), Mode::Native),
                Err(ProgramError::UnknownInterface { .. }) => {
                    return Err(XdpError::new(Step::Interface, Some(libc::ENODEV)));
                }
                Err(native) => {
                    tracing::debug!(ifname, "xdp: native attach failed ({native}), trying generic");
                    (xdp.attach(ifname, XdpMode::Skb), Mode::Generic)
                }
            },
        };
        let id = id.map_err(|e| match e {
            ProgramError::UnknownInterface { .. } => XdpError::new(Step::Interface, Some(libc::ENODEV)),
            e => XdpError::from_chain(Step::Attach, &e),
        })?;
        self.links.push((program, id));
        Ok(used)
    }

    /// Detaches every attachment made through this loader.
    pub fn detach_all(&mut self) {
        for (program, id) in std::mem::take(&mut self.links) {
            if let Ok(xdp) = xdp_mut(&mut self.ebpf, program)
                && let Err(e) = xdp.detach(id)
            {
                tracing::warn!("xdp: detaching {} failed: {e}", program.name());
            }
        }
    }

    /// The counters, each summed over the CPUs.
    pub fn counters(&self) -> Result<Counters, XdpError> {
        let map = self.ebpf.map(COUNTER_MAP).ok_or(XdpError::new(Step::Counters, None))?;
        let array: PerCpuArray<&MapData, u64> =
            PerCpuArray::try_from(map).map_err(|e| XdpError::from_chain(Step::Counters, &e))?;
        let mut out = Counters::default();
        for (family, row) in out.0.iter_mut().enumerate() {
            for (reason, slot) in row.iter_mut().enumerate() {
                let index = (family * REASONS + reason) as u32;
                let values = array.get(&index, 0).map_err(|e| XdpError::from_chain(Step::Counters, &e))?;
                *slot = values.iter().sum();
            }
        }
        Ok(out)
    }

    /// Runs the fast path once on `frame` (an Ethernet frame) with BPF_PROG_TEST_RUN, repeat 1:
    /// its verdict and the frame as the program left it. Counts, like a real frame.
    pub fn test_run(&self, frame: &[u8]) -> Result<(Verdict, Vec<u8>), XdpError> {
        let (verdict, out, _) = self.run(Program::Stun, frame)?;
        Ok((verdict, out))
    }

    /// Runs `program` once on `frame` (repeat 1): the verdict, the frame after it, and the
    /// kernel's measured duration of the run (for cost measurements: take the median of many
    /// runs, and subtract [`Program::Pass`]'s).
    pub fn run(&self, program: Program, frame: &[u8]) -> Result<(Verdict, Vec<u8>, Duration), XdpError> {
        let xdp: &Xdp = self
            .ebpf
            .program(program.name())
            .ok_or(XdpError::new(Step::TestRun, None))?
            .try_into()
            .map_err(|e| XdpError::from_chain(Step::TestRun, &e))?;
        // test_run gives the program a page; the output is at most that.
        let mut out = vec![0u8; 4096];
        let mut opts = TestRunOptions::new();
        opts.data_in = Some(frame);
        opts.data_out = Some(&mut out);
        opts.repeat = 1;
        let result = xdp.test_run(opts).map_err(|e| XdpError::from_chain(Step::TestRun, &e))?;
        out.truncate(result.data_size_out as usize);
        Ok((Verdict::from(result.return_value), out, result.duration))
    }
}

impl fmt::Debug for Fastpath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Fastpath").field("config", &self.config).field("links", &self.links).finish_non_exhaustive()
    }
}

impl Drop for Fastpath {
    fn drop(&mut self) {
        self.detach_all();
    }
}

/// The mask of a `len`-bit prefix as four network-order words, as the program applies it to an
/// address (IPv4: the first word); lengths over 128 are 128.
fn prefix_mask(len: u32) -> [u32; 4] {
    let bits = u128::MAX.checked_shl(128 - len.min(128)).unwrap_or(0);
    let bytes = bits.to_be_bytes();
    std::array::from_fn(|i| u32::from_ne_bytes([bytes[4 * i], bytes[4 * i + 1], bytes[4 * i + 2], bytes[4 * i + 3]]))
}

fn xdp_mut(ebpf: &mut Ebpf, program: Program) -> Result<&mut Xdp, XdpError> {
    ebpf.program_mut(program.name())
        .ok_or(XdpError::new(Step::Open, None))?
        .try_into()
        .map_err(|e| XdpError::from_chain(Step::Open, &e))
}

#[cfg(test)]
mod tests {
    use super::prefix_mask;

    /// The masks as bytes in memory, as the program ANDs them with an address in the packet.
    fn bytes(len: u32) -> Vec<u8> {
        prefix_mask(len).iter().flat_map(|w| w.to_ne_bytes()).collect()
    }

    #[test]
    fn prefix_masks_cover_the_leading_bits_in_network_order() {
        assert_eq!(bytes(0), [0; 16]);
        assert_eq!(bytes(18), [0xff, 0xff, 0xc0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]);
        assert_eq!(bytes(32), [0xff, 0xff, 0xff, 0xff, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]);
        assert_eq!(bytes(56), [0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0, 0, 0, 0, 0, 0, 0, 0, 0]);
        assert_eq!(bytes(128), [0xff; 16]);
        assert_eq!(bytes(200), [0xff; 16]);
    }
}
