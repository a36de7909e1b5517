//! The one error type of the crate.
//!
//! Every fallible function returns [`Result<T>`](Result); the error carries an
//! [`ErrorKind`] with the data a caller needs to react (which parameter, which
//! limit, which kernel), and its `Display` is a lowercase sentence with that
//! context.

use std::fmt;

/// Result alias used throughout the crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// The error type of every wgconv operation.
///
/// Use [`Error::kind`] to match on the cause; `Display` gives a readable
/// message with the context (parameter names, shapes, limits).
#[derive(Debug, Clone, PartialEq)]
pub struct Error {
    kind: ErrorKind,
}

impl Error {
    /// The cause of the error, with its data.
    pub fn kind(&self) -> &ErrorKind {
        &self.kind
    }

    /// Consumes the error and returns its kind.
    pub fn into_kind(self) -> ErrorKind {
        self.kind
    }

    pub(crate) fn new(kind: ErrorKind) -> Self {
        Error { kind }
    }

    /// An invalid parameter value (`name` is the parameter, `value` what was given).
    pub fn invalid_param(
        name: &'static str,
        value: impl fmt::Display,
        reason: impl Into<String>,
    ) -> Self {
        Error::new(ErrorKind::InvalidParam {
            name,
            value: value.to_string(),
            reason: reason.into(),
        })
    }

    /// A tensor or slice whose shape or length does not fit the operation.
    pub fn shape_mismatch(
        what: &'static str,
        expected: impl Into<String>,
        got: impl Into<String>,
    ) -> Self {
        Error::new(ErrorKind::ShapeMismatch {
            what,
            expected: expected.into(),
            got: got.into(),
        })
    }

    /// An element-type mismatch: `what` should be `expected` but is `got`.
    pub(crate) fn dtype_mismatch(
        what: &'static str,
        expected: crate::DType,
        got: crate::DType,
    ) -> Self {
        Error::new(ErrorKind::DTypeMismatch {
            what,
            expected,
            got,
        })
    }

    /// A recording the library's own decisions should have ruled out (e.g. f16 words for a
    /// kernel that reads f32): a typed [`ErrorKind::Device`] error instead of a wrong result,
    /// its message ending in "(library bug)".
    pub(crate) fn library_bug(context: &str, what: &str) -> Self {
        Error::new(ErrorKind::Device {
            context: context.into(),
            message: format!("{what} (library bug)"),
        })
    }

    pub(crate) fn exceeds_limit(limit: &'static str, requested: u64, max: u64) -> Self {
        Error::new(ErrorKind::ExceedsLimit {
            limit,
            requested,
            max,
        })
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.kind, f)
    }
}

impl std::error::Error for Error {}

impl From<ErrorKind> for Error {
    fn from(kind: ErrorKind) -> Self {
        Error::new(kind)
    }
}

/// What went wrong. New variants may be added in minor releases.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum ErrorKind {
    /// A parameter is out of its valid range or inconsistent with the others.
    #[error("invalid parameter `{name}` = {value}: {reason}")]
    InvalidParam {
        /// Parameter name, e.g. `stride`, `padding`, `groups`.
        name: &'static str,
        /// The value that was given, formatted.
        value: String,
        /// Why it is refused.
        reason: String,
    },
    /// A tensor shape or slice length does not match what the operation needs.
    #[error("shape mismatch for {what}: expected {expected}, got {got}")]
    ShapeMismatch {
        /// Which operand (e.g. `weight`, `bias`, `dy`, `data length`).
        what: &'static str,
        /// What was expected.
        expected: String,
        /// What was given.
        got: String,
    },
    /// A single tensor or buffer is larger than the device (or the 32-bit
    /// indexing of the kernels) allows, and the work cannot be split to fit.
    #[error("{limit} exceeded: {requested} requested, the maximum is {max}")]
    ExceedsLimit {
        /// The limit's name, e.g. `max_buffer_size`.
        limit: &'static str,
        /// What the operation needed.
        requested: u64,
        /// What the device allows.
        max: u64,
    },
    /// No WebGPU adapter could be found (or none matched `WGPU_ADAPTER_NAME`).
    #[error(
        "no WebGPU adapter found{detail}; on a machine without a GPU driver install Mesa's \
         software Vulkan driver (lavapipe), e.g. `apt-get install -y mesa-vulkan-drivers` on \
         Debian/Ubuntu or `dnf install mesa-vulkan-drivers` on Fedora, then run with \
         WGPU_BACKEND=vulkan"
    )]
    NoAdapter {
        /// Extra context (requested backend or adapter name), possibly empty.
        detail: String,
    },
    /// The adapter refused to create a device.
    #[error("device request failed: {0}")]
    RequestDevice(String),
    /// A shader failed to compile or a pipeline failed validation.
    #[error("shader `{kernel}` failed to compile: {message}")]
    ShaderCompile {
        /// Kernel name.
        kernel: &'static str,
        /// Message from wgpu / naga.
        message: String,
    },
    /// Mapping a buffer for readback failed.
    #[error("buffer map failed: {0}")]
    BufferMap(String),
    /// The device ran out of memory.
    #[error("out of device memory while {0}")]
    OutOfMemory(String),
    /// The device was lost or reported an internal / validation error.
    #[error("device error while {context}: {message}")]
    Device {
        /// What the library was doing.
        context: String,
        /// wgpu's message.
        message: String,
    },
    /// Two tensors belong to different contexts (devices).
    #[error("tensor `{0}` belongs to a different context")]
    WrongContext(&'static str),
    /// A tensor's element type does not fit the operation (mixed element types where the
    /// operation needs one, or an f32 tensor read as f16).
    #[error("element type mismatch for {what}: expected {expected}, got {got}")]
    DTypeMismatch {
        /// Which operand or call (e.g. `w`, `dy`, `read_f16`).
        what: &'static str,
        /// The element type the operation needs there.
        expected: crate::DType,
        /// The element type of the tensor given.
        got: crate::DType,
    },
    /// An algorithm was forced that cannot run this problem.
    #[error("algorithm `{algorithm}` cannot run this problem: {reason}")]
    UnsupportedAlgorithm {
        /// The forced algorithm.
        algorithm: &'static str,
        /// Why it does not apply.
        reason: String,
    },
}
