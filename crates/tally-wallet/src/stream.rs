//! Payment streams from the device side (decision 0020): the SE commands
//! of a stream as a trait over the in-process applet and the APDU link,
//! and the exchange of one tick between a payer's and a payee's SE.
//!
//! The terminal only carries elements: the payer's SE records each tick
//! before it releases the element, the payee's SE checks it with one hash
//! before it counts it. A terminal that drops, repeats or alters an
//! element gets a refusal with its code and changes nothing.

use alloc::vec::Vec;

use tally_core::codec::{Cbor, CodecError, Reader, Writer};
use tally_core::crypto::Entropy;
use tally_core::stream::{StreamAsk, stream_id};
use tally_core::{Amount, Hash32, Request};
use tally_se::dispatch::{decode_u64, ins};
use tally_se::storage::Storage;
use tally_se::{Applet, StreamClaim};

use crate::link::{ApduLink, SeLink, Transmit, WalletError};

/// The stream commands of an SE (beside its payment commands, which open
/// a stream).
pub trait StreamLink: SeLink {
    /// Payee: the signed request of a stream of `ask.ticks_max` ticks at
    /// `ask.price` (STREAM OPEN, P1 1).
    fn create_stream_request(&mut self, ask: StreamAsk) -> Result<Request, WalletError>;
    /// Payer: releases the element of tick `k`.
    fn release_tick(&mut self, id: &Hash32, k: u32) -> Result<Hash32, WalletError>;
    /// Payee: takes `element` as tick `k`; returns the value streamed.
    fn accept_tick(&mut self, id: &Hash32, k: u32, element: &Hash32)
    -> Result<Amount, WalletError>;
    /// Payer: closes; returns the ticks released.
    fn close_stream_out(&mut self, id: &Hash32) -> Result<u32, WalletError>;
    /// Payee: closes; returns its claim.
    fn close_stream_in(&mut self, id: &Hash32) -> Result<StreamClaim, WalletError>;
}

impl<S: Storage, E: Entropy> StreamLink for Applet<S, E> {
    fn create_stream_request(&mut self, ask: StreamAsk) -> Result<Request, WalletError> {
        Ok(Applet::create_stream_request(self, ask)?)
    }
    fn release_tick(&mut self, id: &Hash32, k: u32) -> Result<Hash32, WalletError> {
        Ok(Applet::release_tick(self, id, k)?)
    }
    fn accept_tick(
        &mut self,
        id: &Hash32,
        k: u32,
        element: &Hash32,
    ) -> Result<Amount, WalletError> {
        Ok(Applet::accept_tick(self, id, k, *element)?)
    }
    fn close_stream_out(&mut self, id: &Hash32) -> Result<u32, WalletError> {
        Ok(Applet::close_stream_out(self, id)?)
    }
    fn close_stream_in(&mut self, id: &Hash32) -> Result<StreamClaim, WalletError> {
        Ok(Applet::close_stream_in(self, id)?)
    }
}

fn amount(d: &[u8]) -> Result<Amount, WalletError> {
    decode_u64(d)
        .map(Amount)
        .map_err(|_| WalletError::BadResponse(CodecError::Malformed))
}

impl<T: Transmit> StreamLink for ApduLink<T> {
    fn create_stream_request(&mut self, ask: StreamAsk) -> Result<Request, WalletError> {
        let d = self.command(ins::STREAM_OPEN, 1, 0, &ask.to_cbor())?;
        Ok(Request::from_cbor(&d)?)
    }
    fn release_tick(&mut self, id: &Hash32, k: u32) -> Result<Hash32, WalletError> {
        let mut w = Writer::new();
        w.array(2);
        id.write(&mut w);
        w.u64(u64::from(k));
        Ok(Hash32::from_cbor(&self.command(
            ins::STREAM_TICK,
            0,
            0,
            &w.into_bytes(),
        )?)?)
    }
    fn accept_tick(
        &mut self,
        id: &Hash32,
        k: u32,
        element: &Hash32,
    ) -> Result<Amount, WalletError> {
        let mut w = Writer::new();
        w.array(3);
        id.write(&mut w);
        w.u64(u64::from(k));
        element.write(&mut w);
        amount(&self.command(ins::STREAM_TICK, 1, 0, &w.into_bytes())?)
    }
    fn close_stream_out(&mut self, id: &Hash32) -> Result<u32, WalletError> {
        let d = self.command(ins::STREAM_CLOSE, 0, 0, &id.to_cbor())?;
        let n = decode_u64(&d).map_err(|_| WalletError::BadResponse(CodecError::Malformed))?;
        u32::try_from(n).map_err(|_| WalletError::BadResponse(CodecError::Malformed))
    }
    fn close_stream_in(&mut self, id: &Hash32) -> Result<StreamClaim, WalletError> {
        let d = self.command(ins::STREAM_CLOSE, 1, 0, &id.to_cbor())?;
        Ok(decode_claim(&d)?)
    }
}

/// The payee's close answer: `[id, ticks, element, value]`.
pub fn decode_claim(d: &[u8]) -> Result<StreamClaim, CodecError> {
    let mut r = Reader::new(d);
    r.array(4)?;
    let c = StreamClaim {
        id: Hash32::read(&mut r)?,
        ticks: r.u32()?,
        element: Hash32::read(&mut r)?,
        value: Amount(r.u64()?),
    };
    if r.position() != d.len() {
        return Err(CodecError::TrailingBytes);
    }
    Ok(c)
}

/// Opens a stream of `ticks_max` ticks at `price` from `payer` to `payee`
/// (decision 0020): an ordinary offline payment whose request asks for the
/// stream — the payee's SE signs the ask, the payer's SE locks
/// `price · ticks_max` for the payee's key in an OPEN transfer carrying
/// its chain's anchor, the payee's SE verifies the package and keeps the
/// stream (the anchor from the verified transfer), the payer's SE takes
/// the receipt. Returns the stream id.
pub fn open_stream(
    payer: &mut dyn StreamLink,
    payee: &mut dyn StreamLink,
    price: Amount,
    ticks_max: u32,
) -> Result<Hash32, WalletError> {
    let request = payee.create_stream_request(StreamAsk { price, ticks_max })?;
    let package = payer.pay(&request)?;
    let receipt = payee.receive(&package)?;
    payer.ack(&receipt)?;
    Ok(stream_id(&receipt.transfer_id, 0))
}

/// One tick: the payee's next tick `k` asked of the payer's SE, its
/// element taken by the payee's SE. Returns the value streamed so far.
pub fn stream_tick(
    payer: &mut dyn StreamLink,
    payee: &mut dyn StreamLink,
    id: &Hash32,
    k: u32,
) -> Result<Amount, WalletError> {
    let element = payer.release_tick(id, k)?;
    payee.accept_tick(id, k, &element)
}

/// `n` ticks from tick `first`; the elements pass through the caller
/// only (kept for tests that replay them).
pub fn stream_ticks(
    payer: &mut dyn StreamLink,
    payee: &mut dyn StreamLink,
    id: &Hash32,
    first: u32,
    n: u32,
) -> Result<Vec<Hash32>, WalletError> {
    let mut out = Vec::with_capacity(n as usize);
    for k in first..first + n {
        let element = payer.release_tick(id, k)?;
        payee.accept_tick(id, k, &element)?;
        out.push(element);
    }
    Ok(out)
}
