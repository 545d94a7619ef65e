//! A blob stream that never yields more than the declared size and checks size and sha256
//! at the end, so nothing unverified is ever reported as a complete blob.

use super::BlobStream;
use crate::digest::Hasher;
use crate::error::{Error, Result, Status};
use bytes::Bytes;
use futures_util::Stream;
use std::pin::Pin;
use std::task::{Context, Poll};

pub struct VerifiedStream {
    inner: BlobStream,
    /// None once the stream has ended (successfully or with an error).
    hasher: Option<Hasher>,
    expected_digest: String,
    expected_size: u64,
    /// An error to yield on the next poll (after the last allowed bytes were yielded).
    pending_error: Option<Error>,
    /// The reference the blob belongs to, for error subjects.
    subject: String,
}

impl VerifiedStream {
    pub fn new(
        inner: BlobStream,
        expected_digest: &str,
        expected_size: u64,
        subject: &str,
    ) -> Self {
        VerifiedStream {
            inner,
            hasher: Some(Hasher::new()),
            expected_digest: expected_digest.to_string(),
            expected_size,
            pending_error: None,
            subject: subject.to_string(),
        }
    }

    fn fail(&mut self, error: Error) -> Poll<Option<Result<Bytes>>> {
        self.hasher = None;
        let error = if error.subject.is_none() {
            error.with_subject(self.subject.clone())
        } else {
            error
        };
        Poll::Ready(Some(Err(error)))
    }

    fn too_large(&self) -> Error {
        Error::new(
            Status::DigestMismatch,
            format!(
                "{}: blob {} is larger than its declared size of {} bytes",
                self.subject, self.expected_digest, self.expected_size
            ),
        )
    }
}

impl Stream for VerifiedStream {
    type Item = Result<Bytes>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = self.get_mut();
        if let Some(error) = this.pending_error.take() {
            return this.fail(error);
        }
        loop {
            let Some(hasher) = this.hasher.as_mut() else {
                return Poll::Ready(None);
            };
            let item = match this.inner.as_mut().poll_next(cx) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(item) => item,
            };
            match item {
                Some(Ok(mut chunk)) => {
                    if chunk.is_empty() {
                        continue;
                    }
                    let remaining = this.expected_size - hasher.len;
                    if remaining == 0 {
                        let error = this.too_large();
                        return this.fail(error);
                    }
                    if chunk.len() as u64 > remaining {
                        // Yield exactly the declared bytes, then the error.
                        chunk.truncate(remaining as usize);
                        hasher.update(&chunk);
                        this.pending_error = Some(this.too_large());
                    } else {
                        hasher.update(&chunk);
                    }
                    return Poll::Ready(Some(Ok(chunk)));
                }
                Some(Err(error)) => {
                    let error = error.context(format!(
                        "{}: reading blob {}",
                        this.subject, this.expected_digest
                    ));
                    return this.fail(error);
                }
                None => {
                    let Some(hasher) = this.hasher.take() else {
                        return Poll::Ready(None);
                    };
                    if hasher.len < this.expected_size {
                        let error = Error::new(
                            Status::Io,
                            format!(
                                "{}: blob {} ended after {} of {} bytes",
                                this.subject, this.expected_digest, hasher.len, this.expected_size
                            ),
                        );
                        return this.fail(error);
                    }
                    let actual = hasher.finish();
                    if actual != this.expected_digest {
                        let error = Error::new(
                            Status::DigestMismatch,
                            format!(
                                "{}: blob digest mismatch: expected {}, got {actual}",
                                this.subject, this.expected_digest
                            ),
                        );
                        return this.fail(error);
                    }
                    return Poll::Ready(None);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::digest::sha256_digest;
    use futures_util::StreamExt;

    fn chunks(parts: &[&'static [u8]]) -> BlobStream {
        let items: Vec<Result<Bytes>> = parts.iter().map(|p| Ok(Bytes::from_static(p))).collect();
        Box::pin(futures_util::stream::iter(items))
    }

    /// All items: the bytes yielded and the final error, if any.
    async fn drain(stream: VerifiedStream) -> (Vec<u8>, Option<Error>) {
        let items: Vec<Result<Bytes>> = stream.collect().await;
        let mut data = Vec::new();
        let mut error = None;
        for (i, item) in items.iter().enumerate() {
            match item {
                Ok(b) => data.extend_from_slice(b),
                Err(e) => {
                    assert_eq!(i, items.len() - 1, "an error must be the last item");
                    error = Some(e.clone());
                }
            }
        }
        (data, error)
    }

    #[tokio::test]
    async fn a_correct_blob_passes() {
        let digest = sha256_digest(b"hello world");
        let s = VerifiedStream::new(chunks(&[b"hello", b"", b" world"]), &digest, 11, "ref");
        let (data, error) = drain(s).await;
        assert_eq!(data, b"hello world");
        assert!(error.is_none(), "{error:?}");
        // The empty blob.
        let s = VerifiedStream::new(chunks(&[]), &sha256_digest(b""), 0, "ref");
        assert!(drain(s).await.1.is_none());
    }

    #[tokio::test]
    async fn wrong_content_is_a_digest_mismatch() {
        let digest = sha256_digest(b"hello world");
        let s = VerifiedStream::new(
            chunks(&[b"hello", b" wOrld"]),
            &digest,
            11,
            "docker://x/y:z",
        );
        let (data, error) = drain(s).await;
        assert_eq!(data.len(), 11);
        let error = error.expect("mismatch reported");
        assert_eq!(error.status, Status::DigestMismatch);
        assert_eq!(error.subject.as_deref(), Some("docker://x/y:z"));
        assert!(error.message.contains(&digest), "{}", error.message);
    }

    #[tokio::test]
    async fn a_longer_body_is_cut_at_the_declared_size() {
        let digest = sha256_digest(b"hello");
        let s = VerifiedStream::new(chunks(&[b"hel", b"lo world", b"more"]), &digest, 5, "ref");
        let (data, error) = drain(s).await;
        assert_eq!(data, b"hello");
        assert_eq!(error.expect("too large").status, Status::DigestMismatch);
        // Exactly the declared size, then more.
        let s = VerifiedStream::new(chunks(&[b"hello", b"!"]), &digest, 5, "ref");
        let (data, error) = drain(s).await;
        assert_eq!(data, b"hello");
        assert_eq!(error.expect("too large").status, Status::DigestMismatch);
    }

    #[tokio::test]
    async fn a_short_body_is_an_io_error() {
        let digest = sha256_digest(b"hello world");
        let s = VerifiedStream::new(chunks(&[b"hello"]), &digest, 11, "ref");
        let (data, error) = drain(s).await;
        assert_eq!(data, b"hello");
        let error = error.expect("short read reported");
        assert_eq!(error.status, Status::Io);
        assert!(error.message.contains("5 of 11"), "{}", error.message);
    }

    #[tokio::test]
    async fn inner_errors_end_the_stream() {
        let items: Vec<Result<Bytes>> = vec![
            Ok(Bytes::from_static(b"he")),
            Err(Error::new(Status::Network, "connection reset")),
            Ok(Bytes::from_static(b"llo")),
        ];
        let s = VerifiedStream::new(
            Box::pin(futures_util::stream::iter(items)),
            &sha256_digest(b"hello"),
            5,
            "ref",
        );
        let (data, error) = drain(s).await;
        assert_eq!(data, b"he");
        let error = error.expect("error passed on");
        assert_eq!(error.status, Status::Network);
        assert!(error.message.contains("connection reset"));
    }
}
