//! The library's benchmarks: `select()` and registration against a
//! hand-written `epoll_wait` loop and mio (see `select/linux.rs`). They
//! measure epoll, so they run on Linux; elsewhere this says so.

#[cfg(target_os = "linux")]
#[path = "select/linux.rs"]
mod linux;

fn main() {
    #[cfg(target_os = "linux")]
    linux::main();
    #[cfg(not(target_os = "linux"))]
    eprintln!("the benchmarks compare with a hand-written epoll loop: Linux only");
}
