//! The open-file limit. Every device connection, HTTP connection, store and journal file
//! is a file descriptor, and the soft `RLIMIT_NOFILE` of a login shell is often 1024,
//! far below what the hard limit allows; `serve` and `demo` raise the soft limit to the
//! hard one at start, as servers do, and size the HTTP connection cap from the result
//! (`http.reserved_fds`).

use rustix::process::{Resource, Rlimit, getrlimit, setrlimit};

/// The open-file limit before and after the start raised it (`None`: unlimited).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct OpenFileLimit {
    /// The soft limit the process was started with.
    pub soft_before: Option<u64>,
    /// The soft limit in effect now.
    pub soft: Option<u64>,
    /// The hard limit (the ceiling for the soft one).
    pub hard: Option<u64>,
}

/// Raises the soft open-file limit to the hard one; on failure the limit stays as it was
/// (and the error comes back beside it, to be logged).
pub fn raise_to_hard() -> (OpenFileLimit, Option<std::io::Error>) {
    let Rlimit { current, maximum } = getrlimit(Resource::Nofile);
    let mut limit = OpenFileLimit {
        soft_before: current,
        soft: current,
        hard: maximum,
    };
    // An unlimited hard limit is not a value the kernel takes for the soft one
    // (`fs.nr_open` caps it): leave such a soft limit as it is.
    let Some(hard) = maximum else {
        return (limit, None);
    };
    if current.is_some_and(|soft| soft >= hard) {
        return (limit, None);
    }
    let raised = Rlimit {
        current: Some(hard),
        maximum,
    };
    match setrlimit(Resource::Nofile, raised) {
        Ok(()) => {
            limit.soft = getrlimit(Resource::Nofile).current;
            (limit, None)
        }
        Err(e) => (limit, Some(e.into())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_soft_limit_ends_at_the_hard_one() {
        // nextest runs each test in its own process, so lowering the limit here touches
        // no other test
        let hard = getrlimit(Resource::Nofile).maximum;
        let low = hard.map_or(512, |h| h.min(512));
        setrlimit(
            Resource::Nofile,
            Rlimit {
                current: Some(low),
                maximum: hard,
            },
        )
        .expect("lowering the soft limit is always allowed");
        let (limit, error) = raise_to_hard();
        assert!(error.is_none(), "{error:?}");
        assert_eq!((limit.soft_before, limit.hard), (Some(low), hard));
        if hard.is_some() {
            assert_eq!(limit.soft, hard);
        }
        assert_eq!(getrlimit(Resource::Nofile).current, limit.soft);
    }
}
