//! Response bodies as hyper sends them: a few bytes known up front (status texts, metrics),
//! a length without bytes (HEAD), a byte range of a file read ahead on a blocking thread, or
//! a listing produced while it is sent. hyper takes the `Content-Length` from
//! [`Body::size_hint`] when it is exact, and sends the listing chunked.

use crate::storage::repo::{FileBody, Listing};
use hyper::body::{Bytes, Frame, SizeHint};
use smol::Task;
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

pub(crate) type Response = hyper::Response<Body>;

pub(crate) enum Body {
    /// Bytes known up front; `None` once sent.
    Full(Option<Bytes>),
    /// The length a HEAD answer announces; hyper never asks for the bytes.
    Length(u64),
    /// A byte range of a file.
    File(FileBody),
    /// A listing, read from disk on a blocking thread a chunk at a time.
    Listing(ListingBody),
}

impl Body {
    pub(crate) fn empty() -> Body {
        Body::Full(None)
    }

    pub(crate) fn text(s: String) -> Body {
        Body::Full(Some(Bytes::from(s)))
    }

    pub(crate) fn listing(listing: Listing) -> Body {
        Body::Listing(ListingBody {
            listing: Some(listing),
            reading: None,
        })
    }

    /// The exact length, if known before sending.
    pub(crate) fn len(&self) -> Option<u64> {
        hyper::body::Body::size_hint(self).exact()
    }
}

impl hyper::body::Body for Body {
    type Data = Bytes;
    type Error = io::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<io::Result<Frame<Bytes>>>> {
        let chunk = match self.get_mut() {
            Body::Full(bytes) => Poll::Ready(bytes.take().map(Ok)),
            Body::Length(_) => Poll::Ready(None),
            Body::File(file) => file.poll_chunk(cx),
            Body::Listing(listing) => listing.poll_chunk(cx),
        };
        chunk.map(|c| c.map(|r| r.map(Frame::data)))
    }

    fn is_end_stream(&self) -> bool {
        match self {
            Body::Full(bytes) => bytes.is_none(),
            Body::Length(_) => true,
            Body::File(file) => file.remaining() == 0,
            Body::Listing(_) => false,
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            Body::Full(bytes) => SizeHint::with_exact(bytes.as_ref().map_or(0, |b| b.len() as u64)),
            Body::Length(n) => SizeHint::with_exact(*n),
            Body::File(file) => SizeHint::with_exact(file.remaining()),
            Body::Listing(_) => SizeHint::default(),
        }
    }
}

/// A listing in flight: either idle between chunks, or filling the next one on a blocking
/// thread (the listing travels there and back).
pub(crate) struct ListingBody {
    listing: Option<Listing>,
    reading: Option<NextChunk>,
}

/// A listing's next chunk being read; it gives back the listing.
type NextChunk = Task<(Listing, io::Result<Option<Vec<u8>>>)>;

impl ListingBody {
    fn poll_chunk(&mut self, cx: &mut Context<'_>) -> Poll<Option<io::Result<Bytes>>> {
        if let Some(mut listing) = self.listing.take() {
            self.reading = Some(smol::unblock(move || {
                let chunk = listing.next_chunk();
                (listing, chunk)
            }));
        }
        let Some(task) = self.reading.as_mut() else {
            return Poll::Ready(None);
        };
        let (listing, chunk) = ready!(Pin::new(task).poll(cx));
        self.reading = None;
        match chunk {
            Ok(Some(chunk)) => {
                self.listing = Some(listing);
                Poll::Ready(Some(Ok(Bytes::from(chunk))))
            }
            Ok(None) => Poll::Ready(None),
            Err(e) => Poll::Ready(Some(Err(e))),
        }
    }
}
