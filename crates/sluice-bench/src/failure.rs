//! Why a request failed, in the few kinds a user acts on differently.

use std::io;

/// A failed request. The run goes on; the kind is counted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Failure {
    /// Connection refused: nothing listens there.
    Refused,
    /// Connection reset or broken pipe.
    Reset,
    /// The server closed the connection before a whole response.
    Closed,
    /// No response within --timeout (connect included).
    Timeout,
    /// This process ran out of file descriptors (EMFILE/ENFILE).
    FdLimit,
    /// The host name did not resolve.
    Dns,
    /// TLS handshake or certificate failure.
    Tls,
    /// The response was not valid HTTP.
    Protocol,
    /// Any other I/O error.
    Io,
}

impl Failure {
    pub const ALL: [Failure; 9] = [
        Failure::Refused,
        Failure::Reset,
        Failure::Closed,
        Failure::Timeout,
        Failure::FdLimit,
        Failure::Dns,
        Failure::Tls,
        Failure::Protocol,
        Failure::Io,
    ];

    /// The name in reports and JSON.
    pub fn name(self) -> &'static str {
        match self {
            Failure::Refused => "refused",
            Failure::Reset => "reset",
            Failure::Closed => "closed",
            Failure::Timeout => "timeout",
            Failure::FdLimit => "emfile",
            Failure::Dns => "dns",
            Failure::Tls => "tls",
            Failure::Protocol => "protocol",
            Failure::Io => "io",
        }
    }

    pub fn index(self) -> usize {
        self as usize
    }

    /// Sorts an I/O error into its kind, keeping its message as a sample.
    pub fn from_io(error: &io::Error) -> Failure {
        let kind = Failure::sort_io(error);
        note(kind, error);
        kind
    }

    fn sort_io(error: &io::Error) -> Failure {
        if matches!(error.raw_os_error(), Some(code) if code == EMFILE || code == ENFILE) {
            return Failure::FdLimit;
        }
        if error.get_ref().is_some_and(|inner| inner.is::<rustls::Error>()) {
            return Failure::Tls;
        }
        match error.kind() {
            io::ErrorKind::ConnectionRefused => Failure::Refused,
            io::ErrorKind::ConnectionReset | io::ErrorKind::BrokenPipe | io::ErrorKind::ConnectionAborted => {
                Failure::Reset
            }
            io::ErrorKind::UnexpectedEof => Failure::Closed,
            io::ErrorKind::TimedOut => Failure::Timeout,
            io::ErrorKind::InvalidData => Failure::Protocol,
            _ => Failure::Io,
        }
    }

    /// Sorts an HTTP/2 (h2) error into its kind, keeping its message as a sample.
    pub fn from_h2(error: &h2::Error) -> Failure {
        if let Some(io) = error.get_io() {
            return Failure::from_io(io);
        }
        let kind = match error.reason() {
            // Malformed frames, from either side's point of view (an HTTP/1-only server
            // answering the preface with an HTTP/1 response lands here).
            Some(h2::Reason::PROTOCOL_ERROR | h2::Reason::FRAME_SIZE_ERROR | h2::Reason::COMPRESSION_ERROR) => {
                Failure::Protocol
            }
            // RST_STREAM and GOAWAY with any other reason.
            _ => Failure::Reset,
        };
        note(kind, error);
        kind
    }
}

/// Distinct messages kept per kind of failure, per thread.
pub const SAMPLES_PER_KIND: usize = 3;

/// Failure messages seen on this thread: a few per kind, so that a report can say what
/// went wrong ("invalid peer certificate: UnknownIssuer"), not only how often.
pub type Samples = Vec<(Failure, String)>;

thread_local! {
    static SAMPLES: std::cell::RefCell<Samples> = const { std::cell::RefCell::new(Vec::new()) };
}

/// Keeps `message` as a sample of `kind` if this thread has fewer than
/// `SAMPLES_PER_KIND` distinct ones; formats it only then.
pub fn note(kind: Failure, message: &dyn std::fmt::Display) {
    let _ = SAMPLES.try_with(|samples| {
        let mut samples = samples.borrow_mut();
        if samples.iter().filter(|(k, _)| *k == kind).count() < SAMPLES_PER_KIND {
            let text = message.to_string();
            if !samples.iter().any(|(k, m)| *k == kind && *m == text) {
                samples.push((kind, text));
            }
        }
    });
}

/// This thread's samples, taken (at the end of its run).
pub fn take_samples() -> Samples {
    SAMPLES.try_with(|samples| std::mem::take(&mut *samples.borrow_mut())).unwrap_or_default()
}

/// Linux errno values for "too many open files" (process and system).
const EMFILE: i32 = 24;
const ENFILE: i32 = 23;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn io_errors_sort_by_what_the_user_does_next() {
        let cases = [
            (io::Error::from_raw_os_error(24), Failure::FdLimit),
            (io::Error::from(io::ErrorKind::ConnectionRefused), Failure::Refused),
            (io::Error::from(io::ErrorKind::BrokenPipe), Failure::Reset),
            (io::Error::from(io::ErrorKind::UnexpectedEof), Failure::Closed),
            (io::Error::new(io::ErrorKind::InvalidData, rustls::Error::DecryptError), Failure::Tls),
            (io::Error::from(io::ErrorKind::InvalidData), Failure::Protocol),
        ];
        for (error, kind) in cases {
            assert_eq!(Failure::from_io(&error), kind, "{error}");
        }
        let names: std::collections::BTreeSet<_> = Failure::ALL.iter().map(|f| f.name()).collect();
        assert_eq!(names.len(), Failure::ALL.len());
        assert!(Failure::ALL.iter().enumerate().all(|(i, f)| f.index() == i));
    }
}
