//! An async client for Firecracker's HTTP API over its Unix socket.
//!
//! Each request opens a fresh connection (connecting to a Unix socket costs
//! microseconds, and a fresh connection can never be left half-used by a
//! timed-out request), sends one HTTP/1.1 request with hyper, and reads the
//! whole response under one deadline. A non-2xx answer becomes
//! [`ApiError::Status`] carrying the HTTP status and Firecracker's
//! `fault_message`.
//!
//! The typed operations (one method per path and method of the API) live in
//! [`crate::operations`]; this module is the transport they share.

use std::path::{Path, PathBuf};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::{Method, Request, StatusCode};
use hyper_util::rt::TokioIo;
use serde::de::DeserializeOwned;
use serde::Serialize;
use tokio::net::UnixStream;

/// The default deadline of one request.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(5);

/// Why a request to the Firecracker API failed.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// Nothing listens on the socket: the VMM has exited or was never started.
    #[error("the VMM is not running: cannot connect to its API socket {socket}: {source}")]
    NotRunning {
        /// The API socket.
        socket: PathBuf,
        /// The connect error.
        #[source]
        source: std::io::Error,
    },
    /// The request did not complete within its deadline.
    #[error("{method} {path} got no answer within {timeout:?}")]
    Timeout {
        /// HTTP method.
        method: Method,
        /// Request path.
        path: String,
        /// The deadline that passed.
        timeout: Duration,
    },
    /// The HTTP exchange itself failed (the VMM closed the connection, ...).
    #[error("{method} {path}: HTTP exchange failed: {source}")]
    Http {
        /// HTTP method.
        method: Method,
        /// Request path.
        path: String,
        /// hyper's error.
        #[source]
        source: hyper::Error,
    },
    /// Firecracker answered with an error status.
    #[error("{method} {path} failed with HTTP {status}: {fault_message}")]
    Status {
        /// HTTP method.
        method: Method,
        /// Request path.
        path: String,
        /// The HTTP status code.
        status: u16,
        /// Firecracker's `fault_message`, or the raw body when it had none.
        fault_message: String,
    },
    /// The request body could not be encoded.
    #[error("{path}: cannot encode the request body: {source}")]
    Encode {
        /// Request path.
        path: String,
        /// serde's error.
        #[source]
        source: serde_json::Error,
    },
    /// The response body did not match the expected model.
    #[error("{method} {path}: unexpected response body {body:?}: {source}")]
    Decode {
        /// HTTP method.
        method: Method,
        /// Request path.
        path: String,
        /// The body received.
        body: String,
        /// serde's error.
        #[source]
        source: serde_json::Error,
    },
    /// A resource id (drive id, interface id, ...) is not one Firecracker accepts.
    #[error("invalid {what} {id:?}: use 1 to 64 characters from A-Z, a-z, 0-9, '_' and '-'")]
    InvalidId {
        /// What the id names.
        what: &'static str,
        /// The rejected id.
        id: String,
    },
}

impl ApiError {
    /// The HTTP status, when Firecracker answered with an error status.
    pub fn status(&self) -> Option<u16> {
        match self {
            ApiError::Status { status, .. } => Some(*status),
            _ => None,
        }
    }

    /// True when the VMM is gone (nothing listens on its socket).
    pub fn is_not_running(&self) -> bool {
        matches!(self, ApiError::NotRunning { .. })
    }
}

/// A client of one Firecracker process's API socket. Cheap to clone.
#[derive(Debug, Clone)]
pub struct Client {
    /// Path of the API socket.
    socket: PathBuf,
    /// Deadline of each request.
    timeout: Duration,
}

impl Client {
    /// A client of the API listening on `socket`, with [`DEFAULT_TIMEOUT`].
    pub fn new(socket: impl Into<PathBuf>) -> Self {
        Client {
            socket: socket.into(),
            timeout: DEFAULT_TIMEOUT,
        }
    }

    /// The same client with another per-request deadline.
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// The API socket's path.
    pub fn socket(&self) -> &Path {
        &self.socket
    }

    /// Sends a request with an optional JSON body and decodes a JSON answer.
    pub async fn call<B, R>(
        &self,
        method: Method,
        path: &str,
        body: Option<&B>,
    ) -> Result<R, ApiError>
    where
        B: Serialize + ?Sized,
        R: DeserializeOwned,
    {
        let bytes = self.send(method.clone(), path, body).await?;
        serde_json::from_slice(&bytes).map_err(|source| ApiError::Decode {
            method,
            path: path.to_string(),
            body: String::from_utf8_lossy(&bytes).into_owned(),
            source,
        })
    }

    /// Sends a request with an optional JSON body and ignores the answer's body.
    pub async fn call_empty<B>(
        &self,
        method: Method,
        path: &str,
        body: Option<&B>,
    ) -> Result<(), ApiError>
    where
        B: Serialize + ?Sized,
    {
        self.send(method, path, body).await.map(|_| ())
    }

    /// Sends one request and returns the body of a successful answer.
    pub async fn send<B>(
        &self,
        method: Method,
        path: &str,
        body: Option<&B>,
    ) -> Result<Bytes, ApiError>
    where
        B: Serialize + ?Sized,
    {
        let payload = match body {
            Some(b) => serde_json::to_vec(b).map_err(|source| ApiError::Encode {
                path: path.to_string(),
                source,
            })?,
            None => Vec::new(),
        };
        let exchange = self.exchange(method.clone(), path, payload);
        match tokio::time::timeout(self.timeout, exchange).await {
            Ok(result) => result,
            Err(_) => Err(ApiError::Timeout {
                method,
                path: path.to_string(),
                timeout: self.timeout,
            }),
        }
    }

    async fn exchange(
        &self,
        method: Method,
        path: &str,
        payload: Vec<u8>,
    ) -> Result<Bytes, ApiError> {
        let http_err = |source| ApiError::Http {
            method: method.clone(),
            path: path.to_string(),
            source,
        };
        let stream =
            UnixStream::connect(&self.socket)
                .await
                .map_err(|source| ApiError::NotRunning {
                    socket: self.socket.clone(),
                    source,
                })?;
        let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .map_err(http_err)?;
        let mut builder = Request::builder()
            .method(method.clone())
            .uri(path)
            .header("Host", "localhost")
            .header("Accept", "application/json");
        if !payload.is_empty() {
            builder = builder.header("Content-Type", "application/json");
        }
        let request =
            builder
                .body(Full::new(Bytes::from(payload)))
                .map_err(|_| ApiError::InvalidId {
                    what: "request path",
                    id: path.to_string(),
                })?;
        let response = async move {
            let response = sender.send_request(request).await?;
            let status = response.status();
            let body = response.into_body().collect().await?.to_bytes();
            drop(sender);
            Ok::<_, hyper::Error>((status, body))
        };
        // Drive the connection and the exchange together; the connection ends
        // once the sender is dropped.
        let (result, _conn) = tokio::join!(response, conn);
        let (status, body) = result.map_err(http_err)?;
        tracing::trace!(%method, path, status = status.as_u16(), "firecracker api");
        if status.is_success() {
            Ok(body)
        } else {
            Err(ApiError::Status {
                method,
                path: path.to_string(),
                status: status.as_u16(),
                fault_message: fault_message(status, &body),
            })
        }
    }
}

/// Firecracker's `fault_message`, or the raw body when there is none.
fn fault_message(status: StatusCode, body: &[u8]) -> String {
    #[derive(serde::Deserialize)]
    struct Fault {
        fault_message: String,
    }
    match serde_json::from_slice::<Fault>(body) {
        Ok(f) => f.fault_message,
        Err(_) if body.is_empty() => status.canonical_reason().unwrap_or("no body").to_string(),
        Err(_) => String::from_utf8_lossy(body).into_owned(),
    }
}

/// Checks a resource id the way Firecracker does: 1 to 64 characters, each
/// alphanumeric, `_` or `-`.
pub fn check_id(what: &'static str, id: &str) -> Result<(), ApiError> {
    let ok = !id.is_empty()
        && id.len() <= 64
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
    if ok {
        Ok(())
    } else {
        Err(ApiError::InvalidId {
            what,
            id: id.to_string(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fault_message_is_extracted() {
        let body = br#"{"fault_message":"The requested operation is not supported after starting the microVM."}"#;
        assert_eq!(
            fault_message(StatusCode::BAD_REQUEST, body),
            "The requested operation is not supported after starting the microVM."
        );
        assert_eq!(fault_message(StatusCode::BAD_REQUEST, b""), "Bad Request");
        assert_eq!(fault_message(StatusCode::BAD_REQUEST, b"plain"), "plain");
    }

    #[test]
    fn ids_are_checked() {
        assert!(check_id("drive id", "rootfs").is_ok());
        assert!(check_id("drive id", "a_b-C9").is_ok());
        for bad in ["", "../x", "a b", "a/b", &"x".repeat(65)] {
            assert!(check_id("drive id", bad).is_err(), "{bad:?}");
        }
    }

    #[tokio::test]
    async fn a_missing_socket_is_not_running() {
        let dir = tempfile::tempdir().unwrap();
        let client = Client::new(dir.path().join("none.sock"));
        let err = client.send::<()>(Method::GET, "/", None).await.unwrap_err();
        assert!(err.is_not_running(), "{err}");
    }
}
