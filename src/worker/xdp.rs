//! The XDP fast path in front of the workers (`[xdp]`): loaded, given its listen addresses and
//! its share of the reflection defence, and attached at start; given new addresses and budgets
//! on reload;
//! detached when draining starts and when the server stops. A failure in `mode = "auto"` logs
//! one line and leaves every request to the workers (as the io_uring fallback does); with an
//! explicit mode it is a start-up error.

use std::time::Duration;

use super::StartError;
use crate::config::{XdpMode, XdpPlan};
use crate::limit::{IPV4_LEVELS, IPV6_LEVELS, Mode as LimitMode, Params};
use crate::xdp::{Fastpath, LimitSettings, Mode, XdpError, XdpView};

/// The loaded program and where it is attached.
pub(super) struct XdpState {
    fastpath: Fastpath,
    /// (interface, the mode it runs in).
    attached: Vec<(String, Mode)>,
    /// Whether the last clock update failed (logged once).
    clock_failed: bool,
}

impl std::fmt::Debug for XdpState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("XdpState").field("attached", &self.attached).finish_non_exhaustive()
    }
}

/// Loads and attaches the fast path of `plan`, limited by `params`; `None` when `[xdp]` is off,
/// no port qualifies, or (mode "auto") it could not load or attach anywhere.
pub(super) fn start(plan: &XdpPlan, params: &Params) -> Result<Option<XdpState>, StartError> {
    let Some(mode) = plan.mode else { return Ok(None) };
    if plan.interfaces.is_empty() {
        return Ok(None);
    }
    if plan.listen.is_empty() {
        tracing::warn!("xdp: no listen port answers plainly; not loading the XDP program");
        return Ok(None);
    }
    let explicit = mode != XdpMode::Auto;
    let fail = |what: String| -> Result<Option<XdpState>, StartError> {
        if explicit {
            Err(StartError::Xdp(what))
        } else {
            tracing::warn!("{what}; the workers answer every request");
            Ok(None)
        }
    };
    let mut fastpath = match Fastpath::load(&plan.listen).and_then(|mut f| {
        f.set_limit(&limit_settings(params))?;
        f.set_clock(super::clock_ms())?;
        Ok(f)
    }) {
        Ok(f) => f,
        Err(e) => return fail(e.to_string()),
    };
    let want = match mode {
        XdpMode::Auto => Mode::Auto,
        XdpMode::Native => Mode::Native,
        XdpMode::Generic => Mode::Generic,
    };
    let mut attached = Vec::new();
    for name in &plan.interfaces {
        match fastpath.attach(name, want) {
            Ok(used) => {
                tracing::info!(interface = %name, mode = mode_label(used), listen = ?plan.listen, "xdp: fast path attached");
                attached.push((name.clone(), used));
            }
            Err(e) if explicit => return Err(StartError::Xdp(format!("{e} (interface {name})"))),
            Err(e) => tracing::warn!("{e} (interface {name}); the workers answer its requests"),
        }
    }
    if attached.is_empty() {
        return Ok(None);
    }
    Ok(Some(XdpState { fastpath, attached, clock_failed: false }))
}

impl XdpState {
    /// A reload: the listen addresses that still answer plainly and the new budgets. A failure
    /// is logged; the program keeps its previous addresses and budgets.
    pub(super) fn reload(&mut self, plan: &XdpPlan, params: &Params) {
        let outcome: Result<(), XdpError> = (|| {
            if plan.listen.is_empty() {
                self.fastpath.set_enabled(false)?;
            } else {
                self.fastpath.set_listen(&plan.listen)?;
                self.fastpath.set_enabled(true)?;
            }
            self.fastpath.set_limit(&limit_settings(params))
        })();
        if let Err(e) = outcome {
            tracing::error!("{e}: the XDP fast path keeps its previous listen addresses and budgets");
        }
    }

    /// The limiter's clock, `ms` of [`super::clock_ms`]. A failure is logged once: the windows
    /// then stop restarting, and sources over budget stay with the workers.
    pub(super) fn tick(&mut self, ms: u64) {
        match self.fastpath.set_clock(ms) {
            Ok(()) => self.clock_failed = false,
            Err(e) if !self.clock_failed => {
                tracing::error!("{e}: the XDP fast path's rate-limit windows stop restarting");
                self.clock_failed = true;
            }
            Err(_) => {}
        }
    }

    /// Detaches from every interface (draining, stopping): the workers answer everything.
    pub(super) fn detach(&mut self) {
        if !self.attached.is_empty() {
            self.fastpath.detach_all();
            tracing::info!("xdp: fast path detached; the workers answer every request");
            self.attached.clear();
        }
    }

    /// The counters and attachments, for the exporter.
    pub(super) fn view(&self) -> XdpView {
        XdpView {
            counters: self.fastpath.counters().unwrap_or_default(),
            attached: self.attached.iter().map(|(name, mode)| (name.clone(), mode_label(*mode))).collect(),
        }
    }
}

fn mode_label(mode: Mode) -> &'static str {
    match mode {
        Mode::Native => "native",
        Mode::Generic => "generic",
        Mode::Auto => "auto",
    }
}

/// The fast path's budgets from `[limit]`: the Binding success budget of each level over one
/// window of `burst_seconds` (at least one answer), the levels' prefix lengths, and the allow
/// and deny prefixes (whose sources go to the workers).
pub(super) fn limit_settings(params: &Params) -> LimitSettings {
    let per_window = |multiplier: u32| {
        let budget = f64::from(params.rate) * f64::from(multiplier) * params.burst_seconds;
        (budget.ceil() as u64).max(1)
    };
    let levels = |m: [u32; 3]| [per_window(1), per_window(m[0]), per_window(m[1]), per_window(m[2])];
    LimitSettings {
        mode: match params.mode {
            LimitMode::Off => 0,
            LimitMode::Enforce => 1,
            LimitMode::DryRun => 2,
        },
        window: Duration::from_secs_f64(params.burst_seconds),
        budget: [levels(params.ipv4_multipliers), levels(params.ipv6_multipliers)],
        prefix_len: [IPV4_LEVELS.map(u32::from), IPV6_LEVELS.map(u32::from)],
        listed: params.allow.iter().chain(&params.deny).map(|c| (c.addr(), c.prefix_len())).collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_default_budgets_are_the_workers_success_budgets() {
        let params = Params::default();
        let s = limit_settings(&params);
        assert_eq!(s.mode, 1);
        assert_eq!(s.window, Duration::from_millis(2500));
        // 400/s × 2.5 s per /32; × 32, 256, 768 for /24, /20, /18; IPv6 × 4, 16, 64.
        assert_eq!(s.budget, [[1000, 32_000, 256_000, 768_000], [1000, 4000, 16_000, 64_000]]);
        assert!(s.listed.is_empty());
        let off = Params { mode: LimitMode::Off, ..Params::default() };
        assert_eq!(limit_settings(&off).mode, 0);
    }
}
