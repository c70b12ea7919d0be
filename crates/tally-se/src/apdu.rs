//! ISO/IEC 7816-4 command and response APDUs, for both ends of the link.
//!
//! This module owns the byte-level framing between a terminal (phone, POS,
//! meter) and the secure element:
//!
//! * [`Command`] / [`Response`]: parsing and encoding of single APDUs, every
//!   case of ISO/IEC 7816-4 §5.1 (1, 2S, 3S, 4S, 2E, 3E, 4E).
//! * Card side: [`ChainAssembler`] reassembles command chaining (CLA bit
//!   `0x10`) into one [`AssembledCommand`]; [`ResponseQueue`] hands out a
//!   response longer than the terminal's Le in pieces, announced with `61xx`
//!   and fetched with GET RESPONSE.
//! * Terminal side: [`chunk_command`] splits a large command into a chain and
//!   [`collect_response`] sends it and follows `61xx` until `9000`.
//!
//! Every malformed input yields an [`ApduError`], never a panic; each error
//! maps to the status word the card answers with ([`ApduError::status_word`]).

extern crate alloc;

use alloc::vec::Vec;
use core::fmt;

/// CLA bit b5: "command is not the last of a chain" (ISO/IEC 7816-4 §5.4.1).
pub const CHAINING_BIT: u8 = 0x10;
/// INS of GET RESPONSE.
pub const INS_GET_RESPONSE: u8 = 0xC0;
/// Largest Nc a short Lc field can carry.
pub const SHORT_DATA_MAX: usize = 255;
/// Largest Ne a short Le field can carry (`00` means 256).
pub const SHORT_LE_MAX: usize = 256;
/// Largest Nc an extended Lc field can carry.
pub const EXTENDED_DATA_MAX: usize = 65_535;
/// Largest Ne an extended Le field can carry (`0000` means 65 536).
pub const EXTENDED_LE_MAX: usize = 65_536;

/// Status words (SW1 SW2) used by the Tally applet.
pub mod sw {
    /// Normal processing.
    pub const OK: u16 = 0x9000;
    /// `61xx`: xx more response bytes are available with GET RESPONSE
    /// (`6100` means 256 or more). Build it with [`bytes_remaining`].
    pub const BYTES_REMAINING: u16 = 0x6100;
    /// Wrong length (Lc or Le inconsistent with the command).
    pub const WRONG_LENGTH: u16 = 0x6700;
    /// Security status not satisfied (for example authentication missing).
    pub const SECURITY_NOT_SATISFIED: u16 = 0x6982;
    /// The command is not allowed in the current state.
    pub const CONDITIONS_NOT_SATISFIED: u16 = 0x6985;
    /// Incorrect parameters in the data field.
    pub const WRONG_DATA: u16 = 0x6A80;
    /// File or application not found.
    pub const FILE_NOT_FOUND: u16 = 0x6A82;
    /// Not enough memory (for example an over-long command chain).
    pub const NOT_ENOUGH_MEMORY: u16 = 0x6A84;
    /// Instruction not supported.
    pub const INS_NOT_SUPPORTED: u16 = 0x6D00;
    /// Class not supported.
    pub const CLA_NOT_SUPPORTED: u16 = 0x6E00;
    /// Wrong P1 or P2.
    pub const WRONG_P1P2: u16 = 0x6B00;
    /// A chain was interrupted by a command that does not belong to it.
    pub const LAST_CMD_EXPECTED: u16 = 0x6883;
    /// Command chaining is not supported for this command.
    pub const COMMAND_CHAINING_NOT_SUPPORTED: u16 = 0x6884;
    /// No precise diagnosis.
    pub const UNKNOWN: u16 = 0x6F00;
    /// Authentication method blocked (PIN tries exhausted).
    pub const AUTH_METHOD_BLOCKED: u16 = 0x6983;
    /// Verification failed, `X` tries left: `63CX`.
    pub const fn wrong_pin(tries_left: u8) -> u16 {
        0x63C0 | (tries_left as u16 & 0x0F)
    }

    /// `61xx` for `remaining` bytes: xx = min(remaining, 256) mod 256, so
    /// `6100` announces 256 bytes or more.
    pub const fn bytes_remaining(remaining: usize) -> u16 {
        let xx = if remaining >= 256 {
            0
        } else {
            remaining as u16
        };
        BYTES_REMAINING | xx
    }

    /// True for `61xx`.
    pub const fn is_bytes_remaining(sw: u16) -> bool {
        sw & 0xFF00 == BYTES_REMAINING
    }
}

/// Everything that can be wrong with an APDU or a chain of them.
#[non_exhaustive]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ApduError {
    /// Fewer bytes than the header or the Lc field announce.
    Truncated,
    /// Bytes left over after the Le field.
    TrailingBytes,
    /// Lc is zero in extended form (ISO/IEC 7816-4 forbids it).
    InvalidLc,
    /// Le is malformed (one byte after extended data) or out of 1..=65536.
    InvalidLe,
    /// The data field exceeds 65 535 bytes and cannot be encoded.
    DataTooLong,
    /// A command in a chain differs from the first one in CLA (apart from
    /// the chaining bit), INS, P1 or P2; the chain has been abandoned.
    ChainMismatch,
    /// The assembled data would exceed the assembler's limit; the chain has
    /// been abandoned.
    ChainTooLong,
    /// `max_data_per_apdu` of zero given to [`chunk_command`].
    InvalidChunkSize,
}

impl ApduError {
    /// The status word a card answers with when it rejects a command for
    /// this reason.
    pub const fn status_word(&self) -> u16 {
        match self {
            ApduError::Truncated
            | ApduError::TrailingBytes
            | ApduError::InvalidLc
            | ApduError::InvalidLe
            | ApduError::DataTooLong => sw::WRONG_LENGTH,
            ApduError::ChainMismatch => sw::LAST_CMD_EXPECTED,
            ApduError::ChainTooLong => sw::NOT_ENOUGH_MEMORY,
            ApduError::InvalidChunkSize => sw::UNKNOWN,
        }
    }
}

impl fmt::Display for ApduError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let text = match self {
            ApduError::Truncated => "APDU is shorter than its header or Lc announce",
            ApduError::TrailingBytes => "APDU has bytes after its Le field",
            ApduError::InvalidLc => "APDU has Lc = 0 in extended form",
            ApduError::InvalidLe => "APDU has a malformed or out-of-range Le",
            ApduError::DataTooLong => "APDU data field is longer than 65535 bytes",
            ApduError::ChainMismatch => "command chain interrupted by a different command",
            ApduError::ChainTooLong => "command chain exceeds the assembly limit",
            ApduError::InvalidChunkSize => "maximum data per APDU must be at least 1",
        };
        f.write_str(text)
    }
}

impl core::error::Error for ApduError {}

/// A command APDU borrowing its data field from the received bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Command<'a> {
    /// Class byte.
    pub cla: u8,
    /// Instruction byte.
    pub ins: u8,
    /// Parameter 1.
    pub p1: u8,
    /// Parameter 2.
    pub p2: u8,
    /// Command data field (Nc = `data.len()`, at most 65 535).
    pub data: &'a [u8],
    /// Ne: `None` when there is no Le field, else `Some(n)` with
    /// `n` in 1..=65536.
    pub le: Option<usize>,
}

impl<'a> Command<'a> {
    /// Parses one command APDU (ISO/IEC 7816-4 §5.1).
    ///
    /// Short form: `CLA INS P1 P2 [Lc data] [Le]`, Lc in 1..=255, Le `00`
    /// meaning 256. Extended form: after the header, `00` then a two-byte
    /// Lc (1..=65535) and data and optionally a two-byte Le, or `00` and a
    /// two-byte Le alone (case 2E); Le `0000` means 65 536.
    pub fn parse(bytes: &'a [u8]) -> Result<Self, ApduError> {
        let (header, body) = bytes.split_first_chunk::<4>().ok_or(ApduError::Truncated)?;
        let [cla, ins, p1, p2] = *header;
        let (data, le) = parse_body(body)?;
        Ok(Command {
            cla,
            ins,
            p1,
            p2,
            data,
            le,
        })
    }

    /// True when the chaining bit says more blocks of this command follow.
    pub const fn is_chained(&self) -> bool {
        self.cla & CHAINING_BIT != 0
    }

    /// Length of [`Command::encode`]'s output, or why it cannot be encoded.
    pub fn encoded_len(&self) -> Result<usize, ApduError> {
        self.check()?;
        let nc = self.data.len();
        let len = if self.is_short() {
            4 + if nc > 0 { 1 + nc } else { 0 } + usize::from(self.le.is_some())
        } else {
            5 + if nc > 0 { 2 + nc } else { 0 } + if self.le.is_some() { 2 } else { 0 }
        };
        Ok(len)
    }

    /// Appends the encoding to `out`: short form when Nc ≤ 255 and Ne ≤ 256,
    /// extended form otherwise. Nothing is appended on error.
    pub fn encode(&self, out: &mut Vec<u8>) -> Result<(), ApduError> {
        let len = self.encoded_len()?;
        out.reserve(len);
        out.extend_from_slice(&[self.cla, self.ins, self.p1, self.p2]);
        let nc = self.data.len();
        if self.is_short() {
            if nc > 0 {
                // nc is in 1..=255 here.
                out.push(nc as u8);
                out.extend_from_slice(self.data);
            }
            if let Some(le) = self.le {
                // 256 encodes as 00.
                out.push((le & 0xFF) as u8);
            }
        } else {
            out.push(0);
            if nc > 0 {
                // nc is in 1..=65535 here.
                out.extend_from_slice(&(nc as u16).to_be_bytes());
                out.extend_from_slice(self.data);
            }
            if let Some(le) = self.le {
                // 65536 encodes as 0000.
                out.extend_from_slice(&((le & 0xFFFF) as u16).to_be_bytes());
            }
        }
        Ok(())
    }

    /// The encoding as a new vector.
    pub fn to_vec(&self) -> Result<Vec<u8>, ApduError> {
        let mut out = Vec::new();
        self.encode(&mut out)?;
        Ok(out)
    }

    fn check(&self) -> Result<(), ApduError> {
        if self.data.len() > EXTENDED_DATA_MAX {
            return Err(ApduError::DataTooLong);
        }
        match self.le {
            Some(le) if le == 0 || le > EXTENDED_LE_MAX => Err(ApduError::InvalidLe),
            _ => Ok(()),
        }
    }

    fn is_short(&self) -> bool {
        self.data.len() <= SHORT_DATA_MAX && self.le.is_none_or(|le| le <= SHORT_LE_MAX)
    }
}

/// Splits everything after the four header bytes into data and Ne.
fn parse_body(body: &[u8]) -> Result<(&[u8], Option<usize>), ApduError> {
    let Some((&b1, rest)) = body.split_first() else {
        // Case 1: header only.
        return Ok((&[], None));
    };
    if rest.is_empty() {
        // Case 2S: a single Le byte.
        return Ok((&[], Some(short_le(b1))));
    }
    if b1 != 0 {
        // Cases 3S and 4S: short Lc in 1..=255.
        let (data, tail) = rest
            .split_at_checked(usize::from(b1))
            .ok_or(ApduError::Truncated)?;
        return match tail {
            [] => Ok((data, None)),
            [le] => Ok((data, Some(short_le(*le)))),
            _ => Err(ApduError::TrailingBytes),
        };
    }
    // B1 = 00 followed by more bytes: extended form.
    let (n, rest) = rest.split_first_chunk::<2>().ok_or(ApduError::Truncated)?;
    let n = u16::from_be_bytes(*n);
    if rest.is_empty() {
        // Case 2E: 00 Le1 Le2.
        return Ok((&[], Some(extended_le(n))));
    }
    if n == 0 {
        return Err(ApduError::InvalidLc);
    }
    let (data, tail) = rest
        .split_at_checked(usize::from(n))
        .ok_or(ApduError::Truncated)?;
    match tail {
        // Case 3E.
        [] => Ok((data, None)),
        // Case 4E.
        [h, l] => Ok((data, Some(extended_le(u16::from_be_bytes([*h, *l]))))),
        // A short Le after extended data is not a valid encoding.
        [_] => Err(ApduError::InvalidLe),
        _ => Err(ApduError::TrailingBytes),
    }
}

fn short_le(b: u8) -> usize {
    if b == 0 { SHORT_LE_MAX } else { usize::from(b) }
}

fn extended_le(n: u16) -> usize {
    if n == 0 {
        EXTENDED_LE_MAX
    } else {
        usize::from(n)
    }
}

/// A response APDU: data field followed by SW1 SW2.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Response {
    /// Response data field.
    pub data: Vec<u8>,
    /// Status word, SW1 in the high byte.
    pub sw: u16,
}

impl Response {
    /// `data || 9000`.
    pub fn ok(data: Vec<u8>) -> Self {
        Response { data, sw: sw::OK }
    }

    /// A response with no data and the given status word.
    pub fn status(sw: u16) -> Self {
        Response {
            data: Vec::new(),
            sw,
        }
    }

    /// Parses `data || SW1 SW2`.
    pub fn parse(bytes: &[u8]) -> Result<Self, ApduError> {
        let (data, sw) = bytes.split_last_chunk::<2>().ok_or(ApduError::Truncated)?;
        Ok(Response {
            data: data.to_vec(),
            sw: u16::from_be_bytes(*sw),
        })
    }

    /// Appends `data || SW1 SW2` to `out`.
    pub fn encode(&self, out: &mut Vec<u8>) {
        out.reserve(self.data.len() + 2);
        out.extend_from_slice(&self.data);
        out.extend_from_slice(&self.sw.to_be_bytes());
    }

    /// The encoding as a new vector.
    pub fn to_vec(&self) -> Vec<u8> {
        let mut out = Vec::new();
        self.encode(&mut out);
        out
    }

    /// SW1.
    pub const fn sw1(&self) -> u8 {
        (self.sw >> 8) as u8
    }

    /// SW2.
    pub const fn sw2(&self) -> u8 {
        (self.sw & 0xFF) as u8
    }

    /// True for `9000`.
    pub const fn is_ok(&self) -> bool {
        self.sw == sw::OK
    }
}

/// A complete command after chain reassembly; owns its data.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AssembledCommand {
    /// Class byte with the chaining bit cleared.
    pub cla: u8,
    /// Instruction byte.
    pub ins: u8,
    /// Parameter 1.
    pub p1: u8,
    /// Parameter 2.
    pub p2: u8,
    /// Concatenated data fields of every block of the chain.
    pub data: Vec<u8>,
    /// Ne of the last block of the chain.
    pub le: Option<usize>,
}

impl AssembledCommand {
    /// Borrows this as a [`Command`].
    pub fn as_command(&self) -> Command<'_> {
        Command {
            cla: self.cla,
            ins: self.ins,
            p1: self.p1,
            p2: self.p2,
            data: &self.data,
            le: self.le,
        }
    }
}

/// The fields every block of one chain must share.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct ChainKey {
    cla: u8,
    ins: u8,
    p1: u8,
    p2: u8,
}

/// Card side: reassembles command chaining (ISO/IEC 7816-4 §5.4.1).
///
/// Feed every received command to [`ChainAssembler::push`]. A block with the
/// chaining bit set is stored and answered `Ok(None)` (the card replies
/// `9000`); the block without it completes the command. A command that is
/// not chained and arrives outside a chain passes straight through.
///
/// On any error the partial chain is dropped, so the terminal has to start
/// the command again from its first block.
#[derive(Clone, Debug)]
pub struct ChainAssembler {
    data_max: usize,
    active: Option<ChainKey>,
    data: Vec<u8>,
}

impl ChainAssembler {
    /// An assembler that refuses commands whose total data exceeds
    /// `data_max` bytes.
    pub fn new(data_max: usize) -> Self {
        ChainAssembler {
            data_max,
            active: None,
            data: Vec::new(),
        }
    }

    /// Limit on the assembled data, in bytes.
    pub fn data_max(&self) -> usize {
        self.data_max
    }

    /// True while a chain is open (a block with the chaining bit arrived and
    /// the last block has not).
    pub fn in_progress(&self) -> bool {
        self.active.is_some()
    }

    /// Bytes of the open chain received so far.
    pub fn assembled_len(&self) -> usize {
        self.data.len()
    }

    /// Drops any partial chain.
    pub fn reset(&mut self) {
        self.active = None;
        self.data = Vec::new();
    }

    /// Takes one received block. Returns the whole command when `cmd` is the
    /// last block (or an unchained command), `None` when more blocks are
    /// expected.
    pub fn push(&mut self, cmd: &Command<'_>) -> Result<Option<AssembledCommand>, ApduError> {
        let key = ChainKey {
            cla: cmd.cla & !CHAINING_BIT,
            ins: cmd.ins,
            p1: cmd.p1,
            p2: cmd.p2,
        };
        if self.active.is_some_and(|active| active != key) {
            self.reset();
            return Err(ApduError::ChainMismatch);
        }
        let total = self.data.len().checked_add(cmd.data.len());
        if total.is_none_or(|total| total > self.data_max) {
            self.reset();
            return Err(ApduError::ChainTooLong);
        }
        self.data.extend_from_slice(cmd.data);
        if cmd.is_chained() {
            self.active = Some(key);
            return Ok(None);
        }
        self.active = None;
        Ok(Some(AssembledCommand {
            cla: key.cla,
            ins: key.ins,
            p1: key.p1,
            p2: key.p2,
            data: core::mem::take(&mut self.data),
            le: cmd.le,
        }))
    }
}

/// Card side: a response longer than the terminal's Le, served in pieces.
///
/// [`ResponseQueue::start`] returns the first piece; while data remains the
/// status word is `61xx` and the terminal fetches the rest with GET RESPONSE
/// ([`ResponseQueue::get_response`]). Any other command discards what is
/// left ([`ResponseQueue::on_command`] does this routing).
///
/// `le` arguments follow the Le byte convention: 0 means 256; values above
/// 65 536 are treated as 65 536.
#[derive(Clone, Debug, Default)]
pub struct ResponseQueue {
    data: Vec<u8>,
    sent: usize,
}

impl ResponseQueue {
    /// An empty queue.
    pub fn new() -> Self {
        ResponseQueue::default()
    }

    /// True while some response data waits for GET RESPONSE.
    pub fn is_pending(&self) -> bool {
        self.remaining() > 0
    }

    /// Bytes not yet sent.
    pub fn remaining(&self) -> usize {
        self.data.len().saturating_sub(self.sent)
    }

    /// Drops any pending data.
    pub fn discard(&mut self) {
        self.data = Vec::new();
        self.sent = 0;
    }

    /// Replaces any pending data with `data` and returns its first piece
    /// of at most `le` bytes.
    pub fn start(&mut self, data: Vec<u8>, le: usize) -> Response {
        self.data = data;
        self.sent = 0;
        self.next_piece(le)
    }

    /// Answers GET RESPONSE: the next piece of at most `le` bytes, or
    /// `6985` when nothing is pending.
    pub fn get_response(&mut self, le: usize) -> Response {
        if !self.is_pending() {
            return Response::status(sw::CONDITIONS_NOT_SATISFIED);
        }
        self.next_piece(le)
    }

    /// Routes a received command: GET RESPONSE is answered here
    /// (`Some(response)`); any other command discards pending data and
    /// returns `None` so the caller dispatches it. A GET RESPONSE without
    /// Le asks for 256 bytes.
    pub fn on_command(&mut self, cmd: &Command<'_>) -> Option<Response> {
        if cmd.ins != INS_GET_RESPONSE {
            self.discard();
            return None;
        }
        if cmd.p1 != 0 || cmd.p2 != 0 {
            return Some(Response::status(sw::WRONG_P1P2));
        }
        if !cmd.data.is_empty() {
            return Some(Response::status(sw::WRONG_LENGTH));
        }
        Some(self.get_response(cmd.le.unwrap_or(0)))
    }

    fn next_piece(&mut self, le: usize) -> Response {
        let ne = if le == 0 {
            SHORT_LE_MAX
        } else {
            le.min(EXTENDED_LE_MAX)
        };
        let rest = self.data.get(self.sent..).unwrap_or(&[]);
        let piece = rest.get(..ne).unwrap_or(rest).to_vec();
        self.sent = self.sent.saturating_add(piece.len());
        let remaining = self.remaining();
        if remaining == 0 {
            self.discard();
            Response::ok(piece)
        } else {
            Response {
                data: piece,
                sw: sw::bytes_remaining(remaining),
            }
        }
    }
}

/// Terminal side: encodes `data` as a chain of commands carrying at most
/// `max_data_per_apdu` bytes each (clamped to 65 535).
///
/// Every block but the last has the chaining bit set in CLA; the last has it
/// cleared and carries `le`. Blocks use extended length only when they need
/// it (more than 255 data bytes, or Ne above 256), so a limit of 255 or less
/// with `le` ≤ 256 yields short APDUs only. Empty `data` gives one APDU.
pub fn chunk_command(
    cla: u8,
    ins: u8,
    p1: u8,
    p2: u8,
    data: &[u8],
    max_data_per_apdu: usize,
    le: Option<usize>,
) -> Result<Vec<Vec<u8>>, ApduError> {
    if max_data_per_apdu == 0 {
        return Err(ApduError::InvalidChunkSize);
    }
    let block_max = max_data_per_apdu.min(EXTENDED_DATA_MAX);
    let last = Command {
        cla: cla & !CHAINING_BIT,
        ins,
        p1,
        p2,
        data: &[],
        le,
    };
    // Reject a bad Le before encoding anything.
    last.check()?;
    let mut apdus = Vec::with_capacity(data.len().div_ceil(block_max).max(1));
    let mut blocks = data.chunks(block_max).peekable();
    if blocks.peek().is_none() {
        apdus.push(last.to_vec()?);
    }
    while let Some(block) = blocks.next() {
        let cmd = if blocks.peek().is_some() {
            Command {
                cla: cla | CHAINING_BIT,
                data: block,
                le: None,
                ..last
            }
        } else {
            Command {
                data: block,
                ..last
            }
        };
        apdus.push(cmd.to_vec()?);
    }
    Ok(apdus)
}

/// Why [`collect_response`] failed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ExchangeError<E> {
    /// The transmit function failed.
    Transport(E),
    /// The card answered with this status word (neither `9000` nor `61xx`).
    Status(u16),
    /// The card's answer was shorter than a status word.
    Malformed(ApduError),
    /// No APDUs were given.
    EmptyChain,
    /// The response data exceeds the caller's limit.
    ResponseTooLong,
    /// The card answered GET RESPONSE with `61xx` and no data, which would
    /// loop forever.
    NoProgress,
}

impl<E: fmt::Display> fmt::Display for ExchangeError<E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ExchangeError::Transport(e) => write!(f, "transport failed: {e}"),
            ExchangeError::Status(sw) => write!(f, "card answered status {sw:04X}"),
            ExchangeError::Malformed(e) => write!(f, "malformed card response: {e}"),
            ExchangeError::EmptyChain => f.write_str("no command to send"),
            ExchangeError::ResponseTooLong => f.write_str("card response exceeds the limit"),
            ExchangeError::NoProgress => {
                f.write_str("card announced more data but GET RESPONSE returned none")
            }
        }
    }
}

impl<E: fmt::Debug + fmt::Display> core::error::Error for ExchangeError<E> {}

/// Terminal side: sends `chain` (as made by [`chunk_command`]) through
/// `transmit`, which takes one command APDU and returns the card's raw
/// response (`data || SW1 SW2`).
///
/// Every block but the last must be answered `9000`. The last block's
/// answer is followed with GET RESPONSE (`00 C0 00 00 xx`) while the card
/// says `61xx`, concatenating data, until `9000`; the concatenated data is
/// returned. Any other status word ends the exchange with
/// [`ExchangeError::Status`]. At most `response_max` bytes are accepted.
pub fn collect_response<E, F>(
    mut transmit: F,
    chain: &[Vec<u8>],
    response_max: usize,
) -> Result<Vec<u8>, ExchangeError<E>>
where
    F: FnMut(&[u8]) -> Result<Vec<u8>, E>,
{
    let mut exchange = |apdu: &[u8]| -> Result<Response, ExchangeError<E>> {
        let raw = transmit(apdu).map_err(ExchangeError::Transport)?;
        Response::parse(&raw).map_err(ExchangeError::Malformed)
    };
    let (last, first) = chain.split_last().ok_or(ExchangeError::EmptyChain)?;
    for apdu in first {
        let response = exchange(apdu)?;
        if !response.is_ok() {
            return Err(ExchangeError::Status(response.sw));
        }
    }
    let mut response = exchange(last)?;
    let mut data = Vec::new();
    loop {
        if data.len().saturating_add(response.data.len()) > response_max {
            return Err(ExchangeError::ResponseTooLong);
        }
        data.extend_from_slice(&response.data);
        if response.is_ok() {
            return Ok(data);
        }
        if !sw::is_bytes_remaining(response.sw) {
            return Err(ExchangeError::Status(response.sw));
        }
        let get_response = [0x00, INS_GET_RESPONSE, 0x00, 0x00, response.sw2()];
        response = exchange(&get_response)?;
        if response.data.is_empty() && sw::is_bytes_remaining(response.sw) {
            return Err(ExchangeError::NoProgress);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::vec;

    use crate::test_rng::XorShift;

    fn pattern(n: usize) -> Vec<u8> {
        (0..n).map(|i| (i * 7 + i / 251) as u8).collect()
    }

    fn cmd<'a>(data: &'a [u8], le: Option<usize>) -> Command<'a> {
        Command {
            cla: 0x80,
            ins: 0x10,
            p1: 0x01,
            p2: 0x02,
            data,
            le,
        }
    }

    fn round_trip(c: &Command<'_>) -> Vec<u8> {
        let bytes = c.to_vec().expect("encodable");
        assert_eq!(bytes.len(), c.encoded_len().expect("encodable"));
        assert_eq!(Command::parse(&bytes), Ok(*c));
        bytes
    }

    #[test]
    fn case_1() {
        let c = Command::parse(&[0x00, 0xA4, 0x04, 0x00]).unwrap();
        assert_eq!(c.data, &[] as &[u8]);
        assert_eq!(c.le, None);
        assert_eq!(round_trip(&c), vec![0x00, 0xA4, 0x04, 0x00]);
    }

    #[test]
    fn case_2s() {
        let c = Command::parse(&[0, 0xB0, 0, 0, 0x10]).unwrap();
        assert_eq!(c.le, Some(16));
        assert!(c.data.is_empty());
        let c = Command::parse(&[0, 0xB0, 0, 0, 0x00]).unwrap();
        assert_eq!(c.le, Some(256));
        assert_eq!(round_trip(&c), vec![0, 0xB0, 0, 0, 0x00]);
        assert_eq!(round_trip(&cmd(&[], Some(1))), vec![0x80, 0x10, 1, 2, 1]);
    }

    #[test]
    fn case_3s() {
        let c = Command::parse(&[0, 0xD6, 0, 0, 3, 1, 2, 3]).unwrap();
        assert_eq!(c.data, &[1, 2, 3]);
        assert_eq!(c.le, None);
        assert_eq!(round_trip(&c), vec![0, 0xD6, 0, 0, 3, 1, 2, 3]);
    }

    #[test]
    fn case_4s() {
        let c = Command::parse(&[0, 0x88, 0, 0, 2, 9, 8, 0x00]).unwrap();
        assert_eq!(c.data, &[9, 8]);
        assert_eq!(c.le, Some(256));
        let c = Command::parse(&[0, 0x88, 0, 0, 2, 9, 8, 0x20]).unwrap();
        assert_eq!(c.le, Some(32));
        assert_eq!(round_trip(&c), vec![0, 0x88, 0, 0, 2, 9, 8, 0x20]);
    }

    #[test]
    fn case_2e() {
        let c = Command::parse(&[0, 0xB0, 0, 0, 0, 0x01, 0x01]).unwrap();
        assert_eq!(c.le, Some(257));
        assert!(c.data.is_empty());
        assert_eq!(round_trip(&c), vec![0, 0xB0, 0, 0, 0, 1, 1]);
        let c = Command::parse(&[0, 0xB0, 0, 0, 0, 0, 0]).unwrap();
        assert_eq!(c.le, Some(65_536));
        assert_eq!(round_trip(&c), vec![0, 0xB0, 0, 0, 0, 0, 0]);
    }

    #[test]
    fn case_3e() {
        let data = pattern(256);
        let mut bytes = vec![0, 0xD6, 0, 0, 0, 0x01, 0x00];
        bytes.extend_from_slice(&data);
        let c = Command::parse(&bytes).unwrap();
        assert_eq!(c.data, &data[..]);
        assert_eq!(c.le, None);
        assert_eq!(round_trip(&c), bytes);
    }

    #[test]
    fn case_4e() {
        let data = pattern(300);
        let mut bytes = vec![0, 0x2A, 0, 0, 0, 0x01, 0x2C];
        bytes.extend_from_slice(&data);
        bytes.extend_from_slice(&[0x00, 0x00]);
        let c = Command::parse(&bytes).unwrap();
        assert_eq!(c.data, &data[..]);
        assert_eq!(c.le, Some(65_536));
        assert_eq!(round_trip(&c), bytes);
        bytes.truncate(bytes.len() - 2);
        bytes.extend_from_slice(&[0x01, 0x00]);
        assert_eq!(Command::parse(&bytes).unwrap().le, Some(256));
    }

    #[test]
    fn extended_encoding_of_small_values_is_accepted() {
        // Case 3E with 3 bytes: not what encode produces, but valid.
        let c = Command::parse(&[0, 1, 2, 3, 0, 0, 3, 7, 7, 7]).unwrap();
        assert_eq!(c.data, &[7, 7, 7]);
        assert_eq!(c.le, None);
        // Case 4E with Le = 1.
        let c = Command::parse(&[0, 1, 2, 3, 0, 0, 1, 7, 0, 1]).unwrap();
        assert_eq!((c.data, c.le), (&[7u8][..], Some(1)));
        // Case 2E with Le = 5.
        assert_eq!(Command::parse(&[0, 1, 2, 3, 0, 0, 5]).unwrap().le, Some(5));
    }

    #[test]
    fn boundary_lengths_choose_the_right_form() {
        let d255 = pattern(255);
        let d256 = pattern(256);
        let short = round_trip(&cmd(&d255, None));
        assert_eq!(short.len(), 4 + 1 + 255);
        assert_eq!(short[4], 0xFF);
        let short = round_trip(&cmd(&d255, Some(256)));
        assert_eq!(short.len(), 4 + 1 + 255 + 1);
        assert_eq!(short[short.len() - 1], 0x00);
        let ext = round_trip(&cmd(&d256, None));
        assert_eq!(ext.len(), 4 + 3 + 256);
        assert_eq!(&ext[4..7], &[0, 1, 0]);
        let ext = round_trip(&cmd(&d256, Some(256)));
        assert_eq!(&ext[ext.len() - 2..], &[0x01, 0x00]);
        let ext = round_trip(&cmd(&d255, Some(257)));
        assert_eq!(&ext[4..7], &[0, 0, 0xFF]);
        assert_eq!(&ext[ext.len() - 2..], &[0x01, 0x01]);
        let ext = round_trip(&cmd(&[], Some(65_536)));
        assert_eq!(ext, vec![0x80, 0x10, 1, 2, 0, 0, 0]);
        let max = pattern(EXTENDED_DATA_MAX);
        let ext = round_trip(&cmd(&max, Some(65_536)));
        assert_eq!(&ext[4..7], &[0, 0xFF, 0xFF]);
        assert_eq!(ext.len(), 4 + 3 + 65_535 + 2);
    }

    #[test]
    fn encode_rejects_unencodable_commands() {
        let big = pattern(EXTENDED_DATA_MAX + 1);
        let mut out = vec![0xAA];
        assert_eq!(
            cmd(&big, None).encode(&mut out),
            Err(ApduError::DataTooLong)
        );
        assert_eq!(
            cmd(&[], Some(0)).encode(&mut out),
            Err(ApduError::InvalidLe)
        );
        assert_eq!(
            cmd(&[1], Some(65_537)).encode(&mut out),
            Err(ApduError::InvalidLe)
        );
        // Nothing was appended on error.
        assert_eq!(out, vec![0xAA]);
    }

    #[test]
    fn malformed_commands_are_rejected() {
        let cases: &[(&[u8], ApduError)] = &[
            (&[], ApduError::Truncated),
            (&[0], ApduError::Truncated),
            (&[0, 1, 2], ApduError::Truncated),
            // Short Lc announces more data than present.
            (&[0, 1, 2, 3, 3, 1, 2], ApduError::Truncated),
            // Short Lc with two bytes after the data.
            (&[0, 1, 2, 3, 1, 9, 0, 0], ApduError::TrailingBytes),
            // 00 then a single byte: an extended field cut short.
            (&[0, 1, 2, 3, 0, 1], ApduError::Truncated),
            // Extended Lc = 0 followed by bytes.
            (&[0, 1, 2, 3, 0, 0, 0, 1], ApduError::InvalidLc),
            (&[0, 1, 2, 3, 0, 0, 0, 0, 0], ApduError::InvalidLc),
            // Extended Lc larger than the data.
            (&[0, 1, 2, 3, 0, 0, 4, 1, 2, 3], ApduError::Truncated),
            // One-byte Le after extended data.
            (&[0, 1, 2, 3, 0, 0, 1, 9, 0], ApduError::InvalidLe),
            // Three bytes after extended data.
            (&[0, 1, 2, 3, 0, 0, 1, 9, 0, 0, 0], ApduError::TrailingBytes),
        ];
        for (bytes, err) in cases {
            assert_eq!(Command::parse(bytes), Err(*err), "{bytes:02X?}");
        }
    }

    #[test]
    fn every_error_maps_to_a_status_word() {
        let all = [
            ApduError::Truncated,
            ApduError::TrailingBytes,
            ApduError::InvalidLc,
            ApduError::InvalidLe,
            ApduError::DataTooLong,
            ApduError::ChainMismatch,
            ApduError::ChainTooLong,
            ApduError::InvalidChunkSize,
        ];
        for e in all {
            assert_ne!(e.status_word(), sw::OK);
            assert!(!alloc::format!("{e}").is_empty());
        }
        assert_eq!(ApduError::Truncated.status_word(), sw::WRONG_LENGTH);
        assert_eq!(
            ApduError::ChainMismatch.status_word(),
            sw::LAST_CMD_EXPECTED
        );
        assert_eq!(ApduError::ChainTooLong.status_word(), sw::NOT_ENOUGH_MEMORY);
    }

    #[test]
    fn response_round_trip() {
        let r = Response {
            data: vec![1, 2, 3],
            sw: 0x6A82,
        };
        assert_eq!(r.to_vec(), vec![1, 2, 3, 0x6A, 0x82]);
        assert_eq!(Response::parse(&r.to_vec()), Ok(r.clone()));
        assert_eq!((r.sw1(), r.sw2()), (0x6A, 0x82));
        assert!(!r.is_ok());
        assert_eq!(Response::parse(&[0x90, 0x00]), Ok(Response::ok(vec![])));
        assert_eq!(Response::parse(&[0x90]), Err(ApduError::Truncated));
        assert_eq!(Response::parse(&[]), Err(ApduError::Truncated));
    }

    #[test]
    fn bytes_remaining_status() {
        assert_eq!(sw::bytes_remaining(1), 0x6101);
        assert_eq!(sw::bytes_remaining(255), 0x61FF);
        assert_eq!(sw::bytes_remaining(256), 0x6100);
        assert_eq!(sw::bytes_remaining(3000), 0x6100);
        assert!(sw::is_bytes_remaining(0x6100));
        assert!(!sw::is_bytes_remaining(0x9000));
    }

    #[test]
    fn unchained_command_passes_through_assembler() {
        let mut asm = ChainAssembler::new(1000);
        let out = asm.push(&cmd(&[1, 2], Some(5))).unwrap().unwrap();
        assert_eq!(out.data, vec![1, 2]);
        assert_eq!(out.le, Some(5));
        assert_eq!(out.as_command(), cmd(&[1, 2], Some(5)));
        assert!(!asm.in_progress());
    }

    #[test]
    fn chain_of_10k_in_255_byte_blocks_reassembles() {
        let payload = pattern(10 * 1024);
        let apdus = chunk_command(0x80, 0x50, 0x00, 0x01, &payload, 255, Some(256)).unwrap();
        assert_eq!(apdus.len(), payload.len().div_ceil(255));
        let mut asm = ChainAssembler::new(16 * 1024);
        let mut result = None;
        for (i, apdu) in apdus.iter().enumerate() {
            let c = Command::parse(apdu).unwrap();
            let last = i + 1 == apdus.len();
            assert_eq!(c.is_chained(), !last);
            assert_eq!(c.cla, if last { 0x80 } else { 0x90 });
            // Short APDUs only: 5-byte header + data (+ Le on the last).
            assert!(apdu.len() <= 4 + 1 + 255 + 1);
            assert_eq!(c.le, if last { Some(256) } else { None });
            let out = asm.push(&c).unwrap();
            assert_eq!(out.is_some(), last);
            assert_eq!(asm.in_progress(), !last);
            if last {
                result = out;
            }
        }
        let result = result.unwrap();
        assert_eq!(result.data, payload);
        assert_eq!(
            (result.cla, result.ins, result.p1, result.p2, result.le),
            (0x80, 0x50, 0x00, 0x01, Some(256))
        );
    }

    #[test]
    fn chain_with_extended_blocks() {
        let payload = pattern(70_000);
        let apdus = chunk_command(0x00, 0x50, 0, 0, &payload, 100_000, Some(65_536)).unwrap();
        // The block size is clamped to 65535.
        assert_eq!(apdus.len(), 2);
        let mut asm = ChainAssembler::new(payload.len());
        assert_eq!(asm.push(&Command::parse(&apdus[0]).unwrap()), Ok(None));
        let out = asm
            .push(&Command::parse(&apdus[1]).unwrap())
            .unwrap()
            .unwrap();
        assert_eq!(out.data, payload);
        assert_eq!(out.le, Some(65_536));
    }

    #[test]
    fn chunk_command_edge_cases() {
        let one = chunk_command(0x10, 0x20, 1, 2, &[], 255, None).unwrap();
        // The chaining bit given by the caller is cleared on the last block.
        assert_eq!(one, vec![vec![0x00, 0x20, 1, 2]]);
        let exact = chunk_command(0, 0x20, 1, 2, &pattern(510), 255, None).unwrap();
        assert_eq!(exact.len(), 2);
        assert_eq!(
            chunk_command(0, 0, 0, 0, &[1], 0, None),
            Err(ApduError::InvalidChunkSize)
        );
        assert_eq!(
            chunk_command(0, 0, 0, 0, &[1], 10, Some(0)),
            Err(ApduError::InvalidLe)
        );
        assert_eq!(
            chunk_command(0, 0, 0, 0, &[1], 10, Some(65_537)),
            Err(ApduError::InvalidLe)
        );
    }

    #[test]
    fn chain_mismatch_resets() {
        let head = [0x90, 0x50, 0, 0, 1, 0xAA];
        for other in [
            [0x80, 0x51, 0, 0, 1, 0xBB],
            [0x80, 0x50, 1, 0, 1, 0xBB],
            [0x80, 0x50, 0, 1, 1, 0xBB],
            [0x81, 0x50, 0, 0, 1, 0xBB],
        ] {
            let mut asm = ChainAssembler::new(100);
            assert_eq!(asm.push(&Command::parse(&head).unwrap()), Ok(None));
            assert_eq!(
                asm.push(&Command::parse(&other).unwrap()),
                Err(ApduError::ChainMismatch)
            );
            assert!(!asm.in_progress());
            assert_eq!(asm.assembled_len(), 0);
            // A fresh command after the reset works and holds no stale data.
            let out = asm.push(&Command::parse(&other).unwrap()).unwrap().unwrap();
            assert_eq!(out.data, vec![0xBB]);
        }
    }

    #[test]
    fn chain_too_long_resets() {
        let mut asm = ChainAssembler::new(300);
        let block = pattern(200);
        let chained = Command {
            cla: 0x90,
            ..cmd(&block, None)
        };
        assert_eq!(asm.push(&chained), Ok(None));
        assert_eq!(asm.push(&chained), Err(ApduError::ChainTooLong));
        assert!(!asm.in_progress());
        assert_eq!(asm.assembled_len(), 0);
        // Exactly at the limit is fine.
        let mut asm = ChainAssembler::new(400);
        assert_eq!(asm.push(&chained), Ok(None));
        let out = asm.push(&cmd(&block, None)).unwrap().unwrap();
        assert_eq!(out.data.len(), 400);
        // The limit also applies to an unchained command.
        let mut asm = ChainAssembler::new(10);
        assert_eq!(
            asm.push(&cmd(&pattern(11), None)),
            Err(ApduError::ChainTooLong)
        );
        asm.reset();
        assert!(!asm.in_progress());
    }

    fn drain(queue: &mut ResponseQueue, first: Response, le: usize) -> (Vec<u8>, usize) {
        let mut data = first.data.clone();
        let mut response = first;
        let mut pieces = 1;
        while sw::is_bytes_remaining(response.sw) {
            let announced = match response.sw2() {
                0 => 256,
                n => usize::from(n),
            };
            assert_eq!(announced, queue.remaining().min(256));
            response = queue.get_response(le);
            data.extend_from_slice(&response.data);
            pieces += 1;
        }
        assert_eq!(response.sw, sw::OK);
        assert!(!queue.is_pending());
        (data, pieces)
    }

    #[test]
    fn get_response_paginates_3000_bytes() {
        let body = pattern(3000);
        for le in [256, 0] {
            let mut queue = ResponseQueue::new();
            let first = queue.start(body.clone(), le);
            assert_eq!(first.data.len(), 256);
            assert_eq!(first.sw, 0x6100);
            let (data, pieces) = drain(&mut queue, first, le);
            assert_eq!(data, body);
            assert_eq!(pieces, 3000usize.div_ceil(256));
        }
    }

    #[test]
    fn get_response_status_words_count_down() {
        let mut queue = ResponseQueue::new();
        let r = queue.start(pattern(700), 256);
        assert_eq!(r.sw, 0x6100); // 444 left
        let r = queue.get_response(256);
        assert_eq!(r.sw, 0x61BC); // 188 left
        let r = queue.get_response(100);
        assert_eq!((r.data.len(), r.sw), (100, 0x6158));
        let r = queue.get_response(0);
        assert_eq!((r.data.len(), r.sw), (88, sw::OK));
        assert_eq!(queue.get_response(256).sw, sw::CONDITIONS_NOT_SATISFIED);
    }

    #[test]
    fn response_queue_small_and_extended() {
        let mut queue = ResponseQueue::new();
        assert_eq!(queue.start(vec![1, 2, 3], 256), Response::ok(vec![1, 2, 3]));
        assert_eq!(queue.start(vec![], 0), Response::ok(vec![]));
        let r = queue.start(pattern(70_000), 1_000_000);
        assert_eq!(r.data.len(), 65_536);
        assert_eq!(r.sw, sw::bytes_remaining(70_000 - 65_536));
    }

    #[test]
    fn other_command_discards_queue() {
        let mut queue = ResponseQueue::new();
        let _ = queue.start(pattern(1000), 256);
        let get = Command::parse(&[0x00, 0xC0, 0x00, 0x00, 0x00]).unwrap();
        let r = queue.on_command(&get).unwrap();
        assert_eq!(r.data.len(), 256);
        let bad_p1 = Command::parse(&[0x00, 0xC0, 0x01, 0x00, 0x00]).unwrap();
        assert_eq!(queue.on_command(&bad_p1).unwrap().sw, sw::WRONG_P1P2);
        let with_data = Command::parse(&[0x00, 0xC0, 0x00, 0x00, 1, 1]).unwrap();
        assert_eq!(queue.on_command(&with_data).unwrap().sw, sw::WRONG_LENGTH);
        assert!(queue.is_pending());
        let other = Command::parse(&[0x80, 0x10, 0x00, 0x00]).unwrap();
        assert_eq!(queue.on_command(&other), None);
        assert!(!queue.is_pending());
        assert_eq!(
            queue.on_command(&get).unwrap().sw,
            sw::CONDITIONS_NOT_SATISFIED
        );
        // GET RESPONSE without Le asks for 256.
        let _ = queue.start(pattern(600), 256);
        let no_le = Command::parse(&[0x00, 0xC0, 0x00, 0x00]).unwrap();
        assert_eq!(queue.on_command(&no_le).unwrap().data.len(), 256);
    }

    /// A card that accepts chained commands and answers each complete
    /// command with `response_len` bytes derived from its data.
    struct EchoCard {
        assembler: ChainAssembler,
        queue: ResponseQueue,
        response_len: usize,
        received: Vec<Vec<u8>>,
    }

    impl EchoCard {
        fn new(response_len: usize) -> Self {
            EchoCard {
                assembler: ChainAssembler::new(64 * 1024),
                queue: ResponseQueue::new(),
                response_len,
                received: Vec::new(),
            }
        }

        fn answer(data: &[u8], len: usize) -> Vec<u8> {
            (0..len)
                .map(|i| data.get(i % data.len().max(1)).copied().unwrap_or(0) ^ (i as u8))
                .collect()
        }

        fn transmit(&mut self, apdu: &[u8]) -> Result<Vec<u8>, ()> {
            let response = match Command::parse(apdu) {
                Err(e) => Response::status(e.status_word()),
                Ok(c) => match self.queue.on_command(&c) {
                    Some(r) => r,
                    None => match self.assembler.push(&c) {
                        Err(e) => Response::status(e.status_word()),
                        Ok(None) => Response::ok(vec![]),
                        Ok(Some(full)) => {
                            let body = Self::answer(&full.data, self.response_len);
                            self.received.push(full.data);
                            self.queue.start(body, full.le.unwrap_or(0))
                        }
                    },
                },
            };
            Ok(response.to_vec())
        }
    }

    #[test]
    fn terminal_and_card_exchange_end_to_end() {
        let payload = pattern(10 * 1024);
        let mut card = EchoCard::new(3000);
        let chain = chunk_command(0x80, 0x50, 0, 0, &payload, 255, Some(256)).unwrap();
        let got = collect_response(|a: &[u8]| card.transmit(a), &chain, 4096).unwrap();
        assert_eq!(card.received, vec![payload.clone()]);
        assert_eq!(got, EchoCard::answer(&payload, 3000));
        // The limit on response size is enforced.
        let mut card = EchoCard::new(3000);
        assert_eq!(
            collect_response(|a: &[u8]| card.transmit(a), &chain, 2999),
            Err(ExchangeError::ResponseTooLong)
        );
    }

    #[test]
    fn collect_response_reports_errors() {
        assert_eq!(
            collect_response(|_: &[u8]| Ok::<_, ()>(vec![0x90, 0x00]), &[], 10),
            Err(ExchangeError::EmptyChain)
        );
        let chain = vec![vec![0x10, 1, 0, 0], vec![0x00, 1, 0, 0]];
        // Error on an intermediate block stops the chain.
        let mut sent = 0;
        let r = collect_response(
            |_: &[u8]| {
                sent += 1;
                Ok::<_, ()>(vec![0x6A, 0x84])
            },
            &chain,
            10,
        );
        assert_eq!(r, Err(ExchangeError::Status(0x6A84)));
        assert_eq!(sent, 1);
        // Transport failure.
        assert_eq!(
            collect_response(|_: &[u8]| Err::<Vec<u8>, _>("gone"), &chain, 10),
            Err(ExchangeError::Transport("gone"))
        );
        // Response shorter than a status word.
        assert_eq!(
            collect_response(|_: &[u8]| Ok::<_, ()>(vec![0x90]), &chain, 10),
            Err(ExchangeError::Malformed(ApduError::Truncated))
        );
        // A card that keeps announcing data without sending any.
        let r = collect_response(|_: &[u8]| Ok::<_, ()>(vec![0x61, 0x10]), &chain[1..], 10);
        assert_eq!(r, Err(ExchangeError::NoProgress));
        // A final error status after some data.
        let mut step = 0;
        let r = collect_response(
            |apdu: &[u8]| {
                step += 1;
                if step == 2 {
                    assert_eq!(apdu, &[0x00, 0xC0, 0x00, 0x00, 0x02]);
                    Ok::<_, ()>(vec![0x6F, 0x00])
                } else {
                    Ok(vec![7, 7, 0x61, 0x02])
                }
            },
            &chain[1..],
            10,
        );
        assert_eq!(r, Err(ExchangeError::Status(sw::UNKNOWN)));
        let text = alloc::format!("{}", ExchangeError::<&str>::Status(0x6985));
        assert!(text.contains("6985"));
    }

    #[test]
    fn randomized_round_trip() {
        let mut rng = XorShift(0x5EED_0001_7A11_0001);
        for _ in 0..3000 {
            let len = match rng.below(10) {
                0 => 0,
                1 => 255 + rng.below(3),
                2 => rng.below(EXTENDED_DATA_MAX + 1),
                _ => rng.below(300),
            };
            let data = rng.bytes(len);
            let le = match rng.below(6) {
                0 => None,
                1 => Some(256 + rng.below(3)),
                2 => Some(EXTENDED_LE_MAX - rng.below(2)),
                3 => Some(1 + rng.below(EXTENDED_LE_MAX)),
                _ => Some(1 + rng.below(300)),
            };
            let c = Command {
                cla: rng.byte(),
                ins: rng.byte(),
                p1: rng.byte(),
                p2: rng.byte(),
                data: &data,
                le,
            };
            round_trip(&c);
            let r = Response {
                data: data.clone(),
                sw: rng.next() as u16,
            };
            assert_eq!(Response::parse(&r.to_vec()), Ok(r));
        }
    }

    #[test]
    fn random_bytes_never_panic_and_reparse_consistently() {
        let mut rng = XorShift(0xDEAD_BEEF_CAFE_F00D);
        for _ in 0..20_000 {
            let len = rng.below(24);
            let mut bytes = rng.bytes(len);
            // Bias toward plausible length fields.
            if len > 4 && rng.below(2) == 0 {
                bytes[4] = (len.saturating_sub(5 + rng.below(2))) as u8;
            }
            if len > 6 && rng.below(3) == 0 {
                bytes[4] = 0;
                bytes[5] = 0;
                bytes[6] = (len.saturating_sub(7 + 2 * rng.below(2))) as u8;
            }
            if let Ok(c) = Command::parse(&bytes) {
                let again = c.to_vec().unwrap();
                assert_eq!(Command::parse(&again), Ok(c));
            }
            let mut asm = ChainAssembler::new(16);
            for chunk in bytes.chunks(6) {
                if let Ok(c) = Command::parse(chunk) {
                    let _ = asm.push(&c);
                }
            }
        }
    }
}
