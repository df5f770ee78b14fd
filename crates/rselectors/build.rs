//! Platform conditions, named once: the library and its tests write
//! `#[cfg(epoll)]`, `#[cfg(kqueue)]`, … instead of lists of operating
//! systems.

use cfg_aliases::cfg_aliases;

fn main() {
    cfg_aliases! {
        // Families of operating systems.
        linux_like: { any(target_os = "linux", target_os = "android") },
        apple: { target_vendor = "apple" },
        bsd: {
            any(
                target_os = "freebsd",
                target_os = "netbsd",
                target_os = "openbsd",
                target_os = "dragonfly"
            )
        },
        solarish: { any(target_os = "illumos", target_os = "solaris") },

        // Readiness mechanisms, where CPython's `select` module has them:
        // illumos has an epoll of its own beside /dev/poll.
        epoll: { any(linux_like, target_os = "illumos") },
        kqueue: { any(apple, bsd) },
        devpoll: { solarish },

        // What `Waker` is made of: an eventfd, else a pipe pair, opened
        // with its flags in one call where `pipe2` exists (not on Apple's).
        eventfd: { linux_like },
        pipe2: { not(apple) },
    }
}
