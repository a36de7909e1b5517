//! One table per operation: the algorithms that can compute it, in the heuristic's order of
//! preference.
//!
//! Each [`Entry`] answers "can you run this problem on this context, and if not, why"
//! ([`Entry::check`]) and records the work ([`Entry::encode`]). Everything that chooses an
//! algorithm walks the same table: the heuristic takes the first entry that can run the
//! problem and prefers it ([`Table::heuristic`]), the autotuner times the entries that can run
//! it ([`Table::candidates`]), and a forced algorithm runs exactly its entry or returns
//! [`ErrorKind::UnsupportedAlgorithm`] with the entry's reason ([`Table::select`]). No entry
//! ever runs another algorithm's work in its place.

use crate::context::Context;
use crate::conv::Algorithm;
use crate::error::{Error, ErrorKind, Result};

/// An operation whose algorithm can be chosen (see [`Context::check_algorithm`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Operation {
    /// The forward convolution ([`Context::conv2d`]).
    Forward,
    /// The gradient with respect to the input ([`Context::conv2d_backward_input`]).
    InputGrad,
    /// The gradient with respect to the weight ([`Context::conv2d_backward_weight`]).
    WeightGrad,
    /// The gradient with respect to the bias ([`Context::conv2d_backward_bias`]).
    BiasGrad,
    /// The transposed convolution ([`Context::conv_transpose2d`]): the input gradient of the
    /// matching conv2d plus a bias, run by the input-gradient table.
    Transposed,
}

impl Operation {
    /// Every operation.
    pub const ALL: &'static [Operation] = &[
        Operation::Forward,
        Operation::InputGrad,
        Operation::WeightGrad,
        Operation::BiasGrad,
        Operation::Transposed,
    ];

    /// Lowercase name (`forward`, `input_grad`, ...).
    pub fn name(self) -> &'static str {
        match self {
            Operation::Forward => "forward",
            Operation::InputGrad => "input_grad",
            Operation::WeightGrad => "weight_grad",
            Operation::BiasGrad => "bias_grad",
            Operation::Transposed => "transposed",
        }
    }
}

/// Why an entry cannot run a problem (a lowercase phrase, e.g. "needs a 1x1 kernel").
pub(crate) type Reason = std::borrow::Cow<'static, str>;

/// One algorithm of one operation on problems `P` with buffers `B`.
pub(crate) struct Entry<P: 'static, B: 'static> {
    /// The algorithm this entry runs.
    pub algorithm: Algorithm,
    /// `Ok` when the entry can run the problem on the context, else why not.
    pub check: fn(&Context, &P) -> Result<(), Reason>,
    /// Whether the heuristic picks this entry for a problem it can run (entries are tried in
    /// table order).
    pub prefer: fn(&Context, &P) -> bool,
    /// Whether the autotuner times this entry on the context (workgroup-memory variants are
    /// not worth timing on CPU adapters, where barriers are emulated).
    pub tune: fn(&Context) -> bool,
    /// Records the work.
    pub encode: fn(&Context, &mut wgpu::CommandEncoder, &P, &B) -> Result<()>,
}

/// The algorithm table of one operation.
pub(crate) struct Table<P: 'static, B: 'static> {
    /// The operation.
    pub op: Operation,
    /// Its entries, in the heuristic's order of preference; the last one runs every problem
    /// the operation accepts, so the heuristic always finds one.
    pub entries: &'static [Entry<P, B>],
}

/// Every entry prefers itself (the fallbacks at the end of a table).
pub(crate) fn always<P>(_: &Context, _: &P) -> bool {
    true
}

/// Never the heuristic's choice (entries only the tuner or a caller picks).
pub(crate) fn never<P>(_: &Context, _: &P) -> bool {
    false
}

/// Every entry runs, or is timed, everywhere.
pub(crate) fn anywhere(_: &Context) -> bool {
    true
}

/// Timed only on GPUs (workgroup-memory variants).
pub(crate) fn gpus_only(ctx: &Context) -> bool {
    !ctx.cpu_kernels()
}

/// `Ok` when `ok`, else `reason`: the body of most checks.
pub(crate) fn need(ok: bool, reason: &'static str) -> Result<(), Reason> {
    if ok {
        Ok(())
    } else {
        Err(reason.into())
    }
}

/// Runs every problem of the operation.
pub(crate) fn runs_all<P>(_: &Context, _: &P) -> Result<(), Reason> {
    Ok(())
}

impl<P: 'static, B: 'static> Table<P, B> {
    /// The entry of `algorithm`, if the operation has one.
    pub(crate) fn entry(&self, algorithm: Algorithm) -> Option<&'static Entry<P, B>> {
        self.entries.iter().find(|e| e.algorithm == algorithm)
    }

    /// `Ok` when `algorithm` can run `p` on `ctx` (`Auto` always can), else the
    /// [`ErrorKind::UnsupportedAlgorithm`] error a call forcing it returns.
    pub(crate) fn check(&self, ctx: &Context, p: &P, algorithm: Algorithm) -> Result<()> {
        if algorithm == Algorithm::Auto {
            return Ok(());
        }
        let refuse = |reason: Reason| {
            Error::new(ErrorKind::UnsupportedAlgorithm {
                algorithm: algorithm.name(),
                reason: format!("{}: {reason}", self.op.name()),
            })
        };
        match self.entry(algorithm) {
            None => Err(refuse(
                "this algorithm has no kernel for this operation".into(),
            )),
            Some(e) => (e.check)(ctx, p).map_err(refuse),
        }
    }

    /// The heuristic's choice: the first entry that can run `p` and prefers it.
    pub(crate) fn heuristic(&self, ctx: &Context, p: &P) -> Algorithm {
        self.entries
            .iter()
            .find(|e| (e.check)(ctx, p).is_ok() && (e.prefer)(ctx, p))
            .map_or(Algorithm::Direct, |e| e.algorithm)
    }

    /// The entries the autotuner times for `p` on `ctx`.
    pub(crate) fn candidates(&self, ctx: &Context, p: &P) -> Vec<Algorithm> {
        self.entries
            .iter()
            .filter(|e| (e.tune)(ctx) && (e.check)(ctx, p).is_ok())
            .map(|e| e.algorithm)
            .collect()
    }

    /// The entry that runs `p` for the caller's `algorithm`: for `Auto` the entry `auto`
    /// picks among those that can run it (given the heuristic's choice and the candidates),
    /// else exactly the forced entry, or its reason for refusing.
    pub(crate) fn select(
        &self,
        ctx: &Context,
        p: &P,
        algorithm: Algorithm,
        auto: impl FnOnce(Algorithm, Vec<Algorithm>) -> Algorithm,
    ) -> Result<&'static Entry<P, B>> {
        let chosen = if algorithm == Algorithm::Auto {
            auto(self.heuristic(ctx, p), self.candidates(ctx, p))
        } else {
            self.check(ctx, p, algorithm)?;
            algorithm
        };
        self.entry(chosen).ok_or_else(|| {
            Error::new(ErrorKind::UnsupportedAlgorithm {
                algorithm: chosen.name(),
                reason: format!("{}: no entry", self.op.name()),
            })
        })
    }
}
