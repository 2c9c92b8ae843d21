//! libaccel.so: the libc boundary.
//!
//! Every exported function here has a libc function's name and signature. Each one asks the fd
//! table whether the fd is ours; if not, it calls straight through to the real function (resolved
//! by `accel_engine::real`), so that for every other fd the cost is a bounds check, one load and
//! a tail call, with no allocation, lock or panic. Ours go to the engine.
//!
//! Hooks are `extern "C-unwind"`: glibc implements thread cancellation by unwinding the cancelled
//! thread's stack from inside a blocking call, through our frame; a plain `extern "C"` frame
//! would abort the process there.
//!
//! Why hand-written hooks and not the `redhook` crate: see docs/architecture.md.

#![allow(clippy::missing_safety_doc)]

pub(crate) mod data;
pub(crate) mod fdops;
pub(crate) mod lifecycle;
mod mux;
pub(crate) mod process;
mod resolver;
mod syscall;

/// The library constructor: resolves the real functions and starts the engine before `main`.
extern "C" fn accel_constructor() {
    accel_engine::engine::init();
}

#[used]
#[link_section = ".init_array"]
static CONSTRUCTOR: extern "C" fn() = accel_constructor;
