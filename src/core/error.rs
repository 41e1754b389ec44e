//! The one error type at the filesystem boundary: an errno for the kernel, a level and a
//! message for the log. Each layer's error converts into it once, so one table decides
//! what a failure means to a program and the adapter logs it once.

use tracing::Level;

use crate::api::ApiError;
use crate::read::ReadError;
use crate::tree::TreeError;

#[derive(Debug, Clone)]
pub struct FsError {
    pub errno: i32,
    /// How loudly to log it: a missing name is routine, a failed read is not.
    pub level: Level,
    pub message: String,
}

impl FsError {
    pub fn new(errno: i32, level: Level, message: impl Into<String>) -> FsError {
        FsError {
            errno,
            level,
            message: message.into(),
        }
    }

    /// A routine refusal (no such entry, not a directory): logged at debug.
    pub fn quiet(errno: i32, message: impl Into<String>) -> FsError {
        FsError::new(errno, Level::DEBUG, message)
    }

    /// Logs the error for operation `op` at its level.
    pub fn log(&self, op: &str) {
        match self.level {
            Level::ERROR => tracing::error!(op, errno = self.errno, "{}", self.message),
            Level::WARN => tracing::warn!(op, errno = self.errno, "{}", self.message),
            Level::INFO => tracing::info!(op, errno = self.errno, "{}", self.message),
            _ => tracing::debug!(op, errno = self.errno, "{}", self.message),
        }
    }
}

impl std::fmt::Display for FsError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} (errno {})", self.message, self.errno)
    }
}

impl From<TreeError> for FsError {
    fn from(e: TreeError) -> Self {
        let errno = e.errno();
        let level = match e {
            TreeError::Api { .. } => Level::WARN,
            _ => Level::DEBUG,
        };
        FsError::new(errno, level, e.to_string())
    }
}

impl From<ReadError> for FsError {
    fn from(e: ReadError) -> Self {
        let level = match e {
            ReadError::Api(ApiError::Changed { .. }) => Level::WARN,
            _ => Level::ERROR,
        };
        FsError::new(e.errno(), level, e.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_table_of_errnos() {
        let api = |e: ApiError| {
            FsError::from(TreeError::Api {
                what: "x".into(),
                source: e,
            })
            .errno
        };
        assert_eq!(api(ApiError::Unauthorized { code: None }), libc::EACCES);
        assert_eq!(
            api(ApiError::NotFound {
                code: None,
                message: String::new()
            }),
            libc::ENOENT
        );
        assert_eq!(api(ApiError::Throttled { attempts: 3 }), libc::EIO);
        assert_eq!(FsError::from(TreeError::NotFound).errno, libc::ENOENT);
        assert_eq!(FsError::from(TreeError::NotFound).level, Level::DEBUG);
        let changed = ReadError::Api(ApiError::Changed {
            expected: "a".into(),
            got: "b".into(),
        });
        assert_eq!(FsError::from(changed).errno, libc::ESTALE);
        let corrupt = ReadError::Corrupt {
            file: "1".into(),
            expected: "a".into(),
            got: "b".into(),
        };
        assert_eq!(FsError::from(corrupt).errno, libc::EIO);
    }
}
