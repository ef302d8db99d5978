//! A stream's filter chain and how each message iterates through it, as
//! Envoy's filter manager does.
//!
//! The request runs the filters in order, the response in reverse. Each
//! piece of a message (headers, a body chunk, trailers) goes through the
//! filters one after the other, and what passes the last one is an
//! [`Out`] for the other end (the upstream, or the client). A filter that
//! stops becomes the direction's stop point; what arrives meanwhile waits
//! there, as the filter's status says:
//!
//! - `StopIteration` on headers: the headers wait; the filter still gets
//!   the body, and a `Continue` from it releases the headers and the body.
//! - `StopAll` on headers: the body is held without calling the filter;
//!   when it resumes, the filter sees it first.
//! - `Buffer` on a body: held, and the filter sees all it holds with each
//!   new chunk; `Watermark`: held, the filter sees only new data; `Drop`:
//!   gone.
//! - A stop on trailers: they wait until the filter resumes.
//!
//! A stop is released by a `Continue` or by the filter resuming the stream
//! from outside ([`Chain::resume`]), and iteration goes on from the filter
//! after it (from the filter itself for data it has not seen). What a
//! filter holds counts against the buffer limit: past it a buffering stop
//! fails the stream ([`Halt::TooLarge`]), a watermark stop stops reading
//! from the sender ([`Chain::wants_data`]).
//!
//! All of it is synchronous: a filter answers at once, and waiting for a
//! stopped filter is the pipeline's business.

use bytes::Bytes;
use ferry_host::LocalResponse;

use crate::filter::{Filter, FilterContext, FilterStatus, HttpFilter, Side, body_of};

/// What came out of one call of the chain, in order (rarely more than a
/// few: no allocation for them).
pub(crate) type Outs = smallvec::SmallVec<[Out; 4]>;

/// What came out of the chain for the other end, in order. Headers and
/// trailers are in the stream's maps, as the filters left them.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Out {
    Headers { end: bool },
    Data { data: Bytes, end: bool },
    Trailers,
}

/// Why iteration cannot go on.
#[derive(Debug)]
pub(crate) enum Halt {
    /// A filter answered.
    Respond(LocalResponse),
    /// A filter reset the stream.
    Reset,
    /// A filter failed, and its policy fails the stream.
    Failed,
    /// A filter buffered more than the buffer limit.
    TooLarge,
}

/// The filters of one stream, and where each direction stands in them.
pub(crate) struct Chain<F = Filter> {
    filters: Vec<F>,
    iterations: [Iteration; 2],
    /// `per_connection_buffer_limit_bytes`: most a direction's stops may hold.
    limit: usize,
}

/// Where one direction stands: the filters it stopped at. Several may be
/// stopped at once (one holds the headers, an earlier one a piece of body),
/// each with what it holds; what one releases goes on to the next.
#[derive(Default)]
struct Iteration {
    /// In the direction's order.
    stops: Vec<Stop>,
}

impl Iteration {
    fn index_of(&self, position: usize) -> Option<usize> {
        self.stops.iter().position(|s| s.at == position)
    }

    fn insert(&mut self, stop: Stop) {
        let index = self.stops.iter().position(|s| s.at > stop.at).unwrap_or(self.stops.len());
        self.stops.insert(index, stop);
    }

    fn held(&self) -> usize {
        self.stops.iter().map(|s| s.held.len()).sum()
    }
}

/// A filter iteration stopped at (by position in the direction's order),
/// and what waits there.
#[derive(Debug)]
struct Stop {
    at: usize,
    /// The headers have not passed this filter yet.
    headers_held: bool,
    /// Their `end_of_stream`, while they wait here.
    headers_end: bool,
    kind: StopKind,
    /// Body data waiting here.
    held: Vec<u8>,
    /// The held data ends the message (no trailers follow).
    held_end: bool,
    /// The trailers came and wait here (a `StopAll` filter has not seen them).
    trailers_waiting: bool,
}

impl Stop {
    fn new(at: usize, kind: StopKind) -> Self {
        Stop {
            at,
            headers_held: false,
            headers_end: false,
            kind,
            held: Vec::new(),
            held_end: false,
            trailers_waiting: false,
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum StopKind {
    /// Plain `StopIteration` on headers: the filter gets the body.
    Headers,
    /// `StopAll` on headers: the filter has not seen what is held.
    HeadersAll { buffer: bool },
    /// Stopped on body data.
    Data(DataStop),
    /// Stopped on trailers.
    Trailers,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum DataStop {
    Buffer,
    Watermark,
    Drop,
}

impl<F: HttpFilter> Chain<F> {
    pub(crate) fn new(filters: Vec<F>, limit: usize) -> Self {
        Chain { filters, iterations: Default::default(), limit }
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.filters.is_empty()
    }

    pub(crate) fn filters(&self) -> &[F] {
        &self.filters
    }

    pub(crate) fn filters_mut(&mut self) -> &mut [F] {
        &mut self.filters
    }

    /// The filters, for their end.
    pub(crate) fn take_filters(&mut self) -> Vec<F> {
        std::mem::take(&mut self.filters)
    }

    /// Whether `side` is stopped at the filter at `index`.
    pub(crate) fn is_stopped_at(&self, side: Side, index: usize) -> bool {
        let position = self.index(side, index);
        self.iterations[side.index()].index_of(position).is_some()
    }

    /// Whether `side` takes more body data now: not while its filters hold
    /// the buffer limit's worth with backpressure (a watermark stop; a
    /// buffering stop fails the stream past the limit instead).
    pub(crate) fn wants_data(&self, side: Side) -> bool {
        let iteration = &self.iterations[side.index()];
        let watermark = iteration
            .stops
            .iter()
            .any(|s| matches!(s.kind, StopKind::HeadersAll { buffer: false } | StopKind::Data(DataStop::Watermark)));
        !watermark || iteration.held() < self.limit
    }

    /// A filter's index from its position in `side`'s order (or back:
    /// the mapping is its own inverse).
    fn index(&self, side: Side, position: usize) -> usize {
        match side {
            Side::Request => position,
            Side::Response => self.filters.len() - 1 - position,
        }
    }

    fn walk<'a>(&'a mut self, side: Side, cx: &'a FilterContext<'a>) -> Walk<'a, F> {
        let Chain { filters, iterations, limit } = self;
        Walk { filters, it: &mut iterations[side.index()], side, cx, limit: *limit, out: Outs::new() }
    }

    /// A message's headers (in the stream's map for `side`).
    pub(crate) fn headers(&mut self, side: Side, cx: &FilterContext<'_>, end: bool) -> Result<Outs, Halt> {
        let mut walk = self.walk(side, cx);
        walk.headers_from(0, end)?;
        Ok(walk.out)
    }

    /// A piece of a message's body.
    pub(crate) fn data(&mut self, side: Side, cx: &FilterContext<'_>, data: Bytes, end: bool) -> Result<Outs, Halt> {
        let mut walk = self.walk(side, cx);
        walk.data_from(0, Vec::from(data), end)?;
        Ok(walk.out)
    }

    /// A message's trailers (in the stream's map for `side`).
    pub(crate) fn trailers(&mut self, side: Side, cx: &FilterContext<'_>) -> Result<Outs, Halt> {
        let mut walk = self.walk(side, cx);
        walk.trailers_from(0)?;
        Ok(walk.out)
    }

    /// Filter `index` resumed `side`: iteration goes on from where it
    /// stopped there. Nothing happens if `side` is not stopped at it.
    pub(crate) fn resume(&mut self, side: Side, cx: &FilterContext<'_>, index: usize) -> Result<Outs, Halt> {
        if !self.is_stopped_at(side, index) {
            return Ok(Outs::new());
        }
        let position = self.index(side, index);
        let mut walk = self.walk(side, cx);
        walk.resume(position)?;
        Ok(walk.out)
    }

    /// A whole body the proxy made (a local reply's) through `side`'s
    /// filters: the headers, then the body as one piece that ends the
    /// message.
    pub(crate) fn whole(&mut self, side: Side, cx: &FilterContext<'_>, body: Bytes) -> Result<Outs, Halt> {
        let mut walk = self.walk(side, cx);
        let end = body.is_empty();
        walk.headers_from(0, end)?;
        if !end {
            walk.data_from(0, Vec::from(body), true)?;
        }
        Ok(walk.out)
    }
}

/// One pass through a direction's filters.
struct Walk<'a, F> {
    filters: &'a mut [F],
    it: &'a mut Iteration,
    side: Side,
    cx: &'a FilterContext<'a>,
    limit: usize,
    out: Outs,
}

impl<F: HttpFilter> Walk<'_, F> {
    fn len(&self) -> usize {
        self.filters.len()
    }

    fn filter(&mut self, position: usize) -> &mut F {
        let index = match self.side {
            Side::Request => position,
            Side::Response => self.filters.len() - 1 - position,
        };
        &mut self.filters[index]
    }

    fn halt(&self, status: FilterStatus) -> Halt {
        match status {
            FilterStatus::Respond(response) => Halt::Respond(response),
            FilterStatus::Reset => Halt::Reset,
            _ => Halt::Failed,
        }
    }

    /// Runs a body callback of the filter at `position` on `data`; what it
    /// left in the body comes back with its status.
    fn call_body(&mut self, position: usize, data: Vec<u8>, end: bool) -> (FilterStatus, Vec<u8>) {
        let side = self.side;
        *body_of(side, &mut self.cx.stream.borrow_mut()) = data;
        let cx = self.cx;
        let status = self.filter(position).body(side, cx, end);
        (status, std::mem::take(body_of(side, &mut self.cx.stream.borrow_mut())))
    }

    /// Runs the trailers callback of the filter at `position`, its body
    /// holding `held`; what it left in the body comes back.
    fn call_trailers(&mut self, position: usize, held: Vec<u8>) -> (FilterStatus, Vec<u8>) {
        let side = self.side;
        *body_of(side, &mut self.cx.stream.borrow_mut()) = held;
        let cx = self.cx;
        let status = self.filter(position).trailers(side, cx);
        (status, std::mem::take(body_of(side, &mut self.cx.stream.borrow_mut())))
    }

    /// The stop at `index` (of the stops) goes: its filter goes on.
    fn release(&mut self, index: usize) -> Stop {
        let stop = self.it.stops.remove(index);
        let (side, stream) = (self.side, self.cx.stream);
        self.filter(stop.at).released(side, stream);
        stop
    }

    /// Headers from the filter at `from` on.
    fn headers_from(&mut self, from: usize, end: bool) -> Result<(), Halt> {
        for position in from..self.len() {
            let side = self.side;
            let cx = self.cx;
            let filter = self.filter(position);
            let status = match side {
                Side::Request => filter.request_headers(cx, end),
                Side::Response => filter.response_headers(cx, end),
            };
            let kind = match status {
                FilterStatus::Continue => continue,
                FilterStatus::StopIteration => StopKind::Headers,
                FilterStatus::StopAll { buffer } => StopKind::HeadersAll { buffer },
                // Body statuses on headers: Envoy holds everything.
                FilterStatus::Buffer | FilterStatus::Watermark | FilterStatus::Drop => {
                    StopKind::HeadersAll { buffer: false }
                }
                status => return Err(self.halt(status)),
            };
            self.it.insert(Stop { headers_held: true, headers_end: end, ..Stop::new(position, kind) });
            return Ok(());
        }
        self.out.push(Out::Headers { end });
        Ok(())
    }

    /// A body status as a stop on data (header statuses buffer, as Envoy).
    fn data_stop(status: &FilterStatus) -> Option<DataStop> {
        match status {
            FilterStatus::Watermark => Some(DataStop::Watermark),
            FilterStatus::Drop => Some(DataStop::Drop),
            FilterStatus::Buffer | FilterStatus::StopIteration | FilterStatus::StopAll { .. } => Some(DataStop::Buffer),
            _ => None,
        }
    }

    /// Whether the direction's message has trailers in its map.
    fn has_trailers(&self) -> bool {
        let stream = self.cx.stream.borrow();
        match self.side {
            Side::Request => !stream.request_trailers.is_empty(),
            Side::Response => !stream.response_trailers.is_empty(),
        }
    }

    /// Body data from the filter at `from` on. A filter that added trailers
    /// in the body's last callback (Envoy's `addDecodedTrailers`) makes it
    /// end with them: the filters after it get the data without the end,
    /// then the trailers.
    fn data_from(&mut self, from: usize, data: Vec<u8>, end: bool) -> Result<(), Halt> {
        match self.data_through(from, data, end)? {
            Some(next) => self.trailers_from(next),
            None => Ok(()),
        }
    }

    /// [`Self::data_from`]'s walk; the position the trailers a filter added
    /// go on from, if one did.
    fn data_through(&mut self, from: usize, mut data: Vec<u8>, mut end: bool) -> Result<Option<usize>, Halt> {
        let mut added = None;
        let mut position = from;
        while position < self.len() {
            let Some(index) = self.it.index_of(position) else {
                let (status, after) = self.call_body(position, data, end);
                if let FilterStatus::Continue = status {
                    data = after;
                    position += 1;
                    if end && self.has_trailers() {
                        (end, added) = (false, Some(position));
                    }
                    continue;
                }
                let Some(kind) = Self::data_stop(&status) else { return Err(self.halt(status)) };
                let held = if kind == DataStop::Drop { Vec::new() } else { after };
                self.it.insert(Stop { held, held_end: end, ..Stop::new(position, StopKind::Data(kind)) });
                return self.check_limit(kind == DataStop::Buffer).map(|()| added);
            };
            let stop = &mut self.it.stops[index];
            match stop.kind {
                StopKind::HeadersAll { buffer } => {
                    stop.held.extend_from_slice(&data);
                    stop.held_end = end;
                    return self.check_limit(buffer).map(|()| added);
                }
                StopKind::Trailers => {
                    // Nothing follows trailers; kept with the stop all the same.
                    stop.held.extend_from_slice(&data);
                    return Ok(added);
                }
                StopKind::Headers | StopKind::Data(_) => {}
            }
            // A buffering filter sees all it holds; the others only new data.
            let sees_all = stop.kind == StopKind::Data(DataStop::Buffer);
            let input = if sees_all {
                let mut all = std::mem::take(&mut stop.held);
                all.extend_from_slice(&data);
                all
            } else {
                data
            };
            let (status, after) = self.call_body(position, input, end);
            if let FilterStatus::Continue = status {
                let stop = self.release(index);
                // Released: what it held goes on with this data.
                data = if sees_all {
                    after
                } else {
                    let mut all = stop.held;
                    all.extend_from_slice(&after);
                    all
                };
                if stop.headers_held {
                    self.headers_from(position + 1, false)?;
                }
                position += 1;
                if end && self.has_trailers() {
                    (end, added) = (false, Some(position));
                }
                continue;
            }
            let Some(kind) = Self::data_stop(&status) else { return Err(self.halt(status)) };
            let stop = &mut self.it.stops[index];
            if sees_all {
                // What it holds, as it left it (a drop keeps what was held, as Envoy's).
                stop.held = after;
            } else if kind != DataStop::Drop {
                stop.held.extend_from_slice(&after);
            }
            stop.kind = StopKind::Data(kind);
            stop.held_end = end;
            return self.check_limit(kind == DataStop::Buffer).map(|()| added);
        }
        if !data.is_empty() || end {
            self.out.push(Out::Data { data: data.into(), end });
        }
        Ok(added)
    }

    /// Past the limit a buffering stop fails the stream; a watermark stop
    /// only stops the reading (see [`Chain::wants_data`]).
    fn check_limit(&self, buffer: bool) -> Result<(), Halt> {
        if buffer && self.it.held() > self.limit { Err(Halt::TooLarge) } else { Ok(()) }
    }

    /// Trailers from the filter at `from` on. Data a filter makes in its
    /// trailers callback (a compressor's last bytes) goes to the filters
    /// after it first.
    fn trailers_from(&mut self, from: usize) -> Result<(), Halt> {
        let mut position = from;
        while position < self.len() {
            let index = self.it.index_of(position);
            let held = match index.map(|i| &mut self.it.stops[i]) {
                Some(stop) if matches!(stop.kind, StopKind::HeadersAll { .. } | StopKind::Trailers) => {
                    stop.trailers_waiting = true;
                    return Ok(());
                }
                // It sees what it holds as its body.
                Some(stop) => std::mem::take(&mut stop.held),
                None => Vec::new(),
            };
            let (status, after) = self.call_trailers(position, held);
            match status {
                FilterStatus::Continue => {
                    if let Some(index) = index
                        && self.release(index).headers_held
                    {
                        self.headers_from(position + 1, false)?;
                    }
                    if !after.is_empty() {
                        self.data_from(position + 1, after, false)?;
                    }
                    position += 1;
                }
                FilterStatus::Respond(_) | FilterStatus::Reset | FilterStatus::Failed => {
                    return Err(self.halt(status));
                }
                _ => {
                    match index {
                        Some(index) => {
                            let stop = &mut self.it.stops[index];
                            stop.kind = StopKind::Trailers;
                            stop.held = after;
                        }
                        None => self.it.insert(Stop { held: after, ..Stop::new(position, StopKind::Trailers) }),
                    }
                    return Ok(());
                }
            }
        }
        self.out.push(Out::Trailers);
        Ok(())
    }

    /// The filter at `at` resumed: iteration goes on where it stopped.
    fn resume(&mut self, at: usize) -> Result<(), Halt> {
        let Some(index) = self.it.index_of(at) else { return Ok(()) };
        let stop = self.release(index);
        if stop.headers_held {
            self.headers_from(at + 1, stop.headers_end)?;
            if stop.headers_end {
                return Ok(());
            }
        }
        // Trailers wait for it, or it added them in the body's last callback.
        let trailers = stop.trailers_waiting || (stop.held_end && self.has_trailers());
        let end = stop.held_end && !trailers;
        let held = stop.held;
        match stop.kind {
            // It has not seen what it holds: it gets it first.
            StopKind::HeadersAll { .. } => {
                if !held.is_empty() || end {
                    self.data_from(at, held, end)?;
                }
                if trailers {
                    self.trailers_from(at)?;
                }
            }
            StopKind::Headers | StopKind::Data(_) => {
                if !held.is_empty() || end {
                    self.data_from(at + 1, held, end)?;
                }
                if trailers {
                    self.trailers_from(at + 1)?;
                }
            }
            StopKind::Trailers => {
                if !held.is_empty() {
                    self.data_from(at + 1, held, false)?;
                }
                self.trailers_from(at + 1)?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    //! Each of Envoy's iteration rules on a chain of scripted filters: what
    //! each filter saw, and what came out, in order.

    use std::cell::RefCell;
    use std::collections::VecDeque;
    use std::rc::Rc;

    use ferry_host::{HttpStream, SharedStream};

    use super::*;

    /// What a scripted filter does on one call: a status, and optionally
    /// new body data.
    struct Reply(FilterStatus, Option<&'static str>);

    fn go() -> Reply {
        Reply(FilterStatus::Continue, None)
    }

    fn with(status: FilterStatus) -> Reply {
        Reply(status, None)
    }

    /// What [`adding_trailers`] puts in place of a body.
    const ADD_TRAILERS: &str = "\0add trailers";

    /// Continues after adding a trailer to the message (in a body callback).
    fn adding_trailers() -> Reply {
        Reply(FilterStatus::Continue, Some(ADD_TRAILERS))
    }

    /// A filter that logs each call (`name phase body eos`) and answers
    /// from its script (then continues).
    struct Scripted {
        name: &'static str,
        log: Rc<RefCell<Vec<String>>>,
        script: VecDeque<Reply>,
    }

    impl Scripted {
        fn reply(&mut self, side: Side, cx: &FilterContext<'_>, what: String) -> FilterStatus {
            self.log.borrow_mut().push(format!("{} {what}", self.name));
            let Reply(status, body) = self.script.pop_front().unwrap_or_else(go);
            if body == Some(ADD_TRAILERS) {
                let mut stream = cx.stream.borrow_mut();
                let trailers = match side {
                    Side::Request => &mut stream.request_trailers,
                    Side::Response => &mut stream.response_trailers,
                };
                trailers.append_lowercase(Bytes::from_static(b"x-added"), Bytes::from_static(b"yes"));
            } else if let Some(body) = body {
                *body_of(side, &mut cx.stream.borrow_mut()) = body.as_bytes().to_vec();
            }
            status
        }
    }

    fn text(side: Side, cx: &FilterContext<'_>) -> String {
        String::from_utf8_lossy(body_of(side, &mut cx.stream.borrow_mut())).into_owned()
    }

    impl HttpFilter for Scripted {
        fn request_headers(&mut self, cx: &FilterContext<'_>, end: bool) -> FilterStatus {
            self.reply(Side::Request, cx, format!("headers end={end}"))
        }

        fn response_headers(&mut self, cx: &FilterContext<'_>, end: bool) -> FilterStatus {
            self.reply(Side::Response, cx, format!("headers end={end}"))
        }

        fn body(&mut self, side: Side, cx: &FilterContext<'_>, end: bool) -> FilterStatus {
            let seen = text(side, cx);
            self.reply(side, cx, format!("body {seen:?} end={end}"))
        }

        fn trailers(&mut self, side: Side, cx: &FilterContext<'_>) -> FilterStatus {
            let held = text(side, cx);
            self.reply(side, cx, format!("trailers holding {held:?}"))
        }

        fn released(&mut self, _: Side, _: &SharedStream) {
            self.log.borrow_mut().push(format!("{} released", self.name));
        }

        fn finish(self, _: &SharedStream) {}
    }

    /// A chain of filters named `a`, `b`, ... with these scripts, a buffer
    /// limit of 8 bytes, and the log of their calls.
    struct Setup {
        chain: Chain<Scripted>,
        stream: SharedStream,
        log: Rc<RefCell<Vec<String>>>,
    }

    fn setup(scripts: Vec<Vec<Reply>>) -> Setup {
        let log = Rc::new(RefCell::new(Vec::new()));
        let names = ["a", "b", "c"];
        let filters = scripts
            .into_iter()
            .enumerate()
            .map(|(i, script)| Scripted { name: names[i], log: log.clone(), script: script.into() })
            .collect();
        Setup { chain: Chain::new(filters, 8), stream: ferry_host::share(HttpStream::default()), log }
    }

    impl Setup {
        fn headers(&mut self, side: Side, end: bool) -> Result<Vec<Out>, Halt> {
            let stream = self.stream.clone();
            self.chain.headers(side, &FilterContext { stream: &stream, signals: None }, end).map(Outs::into_vec)
        }

        fn data(&mut self, side: Side, data: &'static str, end: bool) -> Result<Vec<Out>, Halt> {
            let stream = self.stream.clone();
            let cx = FilterContext { stream: &stream, signals: None };
            self.chain.data(side, &cx, Bytes::from(data), end).map(Outs::into_vec)
        }

        fn trailers(&mut self, side: Side) -> Result<Vec<Out>, Halt> {
            let stream = self.stream.clone();
            self.chain.trailers(side, &FilterContext { stream: &stream, signals: None }).map(Outs::into_vec)
        }

        fn resume(&mut self, side: Side, index: usize) -> Result<Vec<Out>, Halt> {
            let stream = self.stream.clone();
            self.chain.resume(side, &FilterContext { stream: &stream, signals: None }, index).map(Outs::into_vec)
        }

        fn calls(&self) -> Vec<String> {
            std::mem::take(&mut *self.log.borrow_mut())
        }
    }

    fn data(text: &'static str, end: bool) -> Out {
        Out::Data { data: Bytes::from(text), end }
    }

    fn headers(end: bool) -> Out {
        Out::Headers { end }
    }

    #[test]
    fn continuing_filters_pass_each_piece_on_at_once() {
        let mut s = setup(vec![vec![], vec![]]);
        assert_eq!(s.headers(Side::Request, false).unwrap(), [headers(false)]);
        assert_eq!(s.data(Side::Request, "ab", false).unwrap(), [data("ab", false)]);
        assert_eq!(s.data(Side::Request, "c", true).unwrap(), [data("c", true)]);
        assert_eq!(
            s.calls(),
            [
                "a headers end=false",
                "b headers end=false",
                r#"a body "ab" end=false"#,
                r#"b body "ab" end=false"#,
                r#"a body "c" end=true"#,
                r#"b body "c" end=true"#
            ]
        );
    }

    #[test]
    fn the_response_runs_the_filters_in_reverse() {
        let mut s = setup(vec![vec![], vec![]]);
        assert_eq!(s.headers(Side::Response, true).unwrap(), [headers(true)]);
        assert_eq!(s.calls(), ["b headers end=true", "a headers end=true"]);
    }

    #[test]
    fn stop_iteration_on_headers_holds_them_while_the_filter_gets_the_body() {
        let mut s = setup(vec![vec![with(FilterStatus::StopIteration), with(FilterStatus::Buffer)], vec![]]);
        assert_eq!(s.headers(Side::Request, false).unwrap(), []);
        assert_eq!(s.data(Side::Request, "ab", false).unwrap(), []);
        // Its continue releases the headers, then all it held.
        assert_eq!(s.data(Side::Request, "cd", true).unwrap(), [headers(false), data("abcd", true)]);
        assert_eq!(
            s.calls(),
            [
                "a headers end=false",
                r#"a body "ab" end=false"#,
                r#"a body "abcd" end=true"#,
                "a released",
                "b headers end=false",
                r#"b body "abcd" end=true"#
            ]
        );
    }

    #[test]
    fn stop_all_holds_the_body_unseen_until_the_filter_resumes_and_sees_it_first() {
        let mut s = setup(vec![vec![with(FilterStatus::StopAll { buffer: false })], vec![]]);
        assert_eq!(s.headers(Side::Request, false).unwrap(), []);
        assert_eq!(s.data(Side::Request, "ab", false).unwrap(), []);
        assert_eq!(s.data(Side::Request, "cd", true).unwrap(), []);
        assert_eq!(s.calls(), ["a headers end=false"]);
        let out = s.resume(Side::Request, 0).unwrap();
        assert_eq!(out, [headers(false), data("abcd", true)]);
        assert_eq!(
            s.calls(),
            ["a released", "b headers end=false", r#"a body "abcd" end=true"#, r#"b body "abcd" end=true"#]
        );
    }

    #[test]
    fn a_buffering_filter_sees_all_it_holds_and_hands_it_on_whole() {
        let mut s = setup(vec![vec![go(), with(FilterStatus::Buffer), with(FilterStatus::Buffer)], vec![]]);
        assert_eq!(s.headers(Side::Request, false).unwrap(), [headers(false)]);
        assert_eq!(s.data(Side::Request, "ab", false).unwrap(), []);
        assert_eq!(s.data(Side::Request, "cd", false).unwrap(), []);
        assert_eq!(s.data(Side::Request, "", true).unwrap(), [data("abcd", true)]);
        let calls = s.calls();
        assert_eq!(
            calls[2..],
            [
                r#"a body "ab" end=false"#,
                r#"a body "abcd" end=false"#,
                r#"a body "abcd" end=true"#,
                "a released",
                r#"b body "abcd" end=true"#
            ]
        );
    }

    #[test]
    fn a_buffering_filter_may_replace_the_whole_body() {
        let mut s = setup(vec![vec![go(), with(FilterStatus::Buffer), Reply(FilterStatus::Continue, Some("new"))]]);
        s.headers(Side::Request, false).unwrap();
        s.data(Side::Request, "old", false).unwrap();
        assert_eq!(s.data(Side::Request, "er", true).unwrap(), [data("new", true)]);
    }

    #[test]
    fn a_buffering_stop_past_the_limit_fails_the_stream() {
        let mut s = setup(vec![vec![go(), with(FilterStatus::Buffer), with(FilterStatus::Buffer)]]);
        s.headers(Side::Request, false).unwrap();
        s.data(Side::Request, "12345", false).unwrap();
        assert!(s.chain.wants_data(Side::Request), "a buffering stop keeps reading");
        assert!(matches!(s.data(Side::Request, "6789", false), Err(Halt::TooLarge)));
    }

    #[test]
    fn a_watermark_stop_past_the_limit_stops_the_reading_instead() {
        let mut s = setup(vec![vec![go(), with(FilterStatus::Watermark), with(FilterStatus::Watermark)], vec![]]);
        s.headers(Side::Request, false).unwrap();
        s.data(Side::Request, "12345", false).unwrap();
        assert!(s.chain.wants_data(Side::Request));
        assert_eq!(s.data(Side::Request, "6789", false).unwrap(), []);
        assert!(!s.chain.wants_data(Side::Request), "backpressure at the limit");
        let calls = s.calls();
        // It sees only new data each time.
        assert_eq!(calls[2..], [r#"a body "12345" end=false"#, r#"a body "6789" end=false"#]);
        assert_eq!(s.data(Side::Request, "0", true).unwrap(), [data("1234567890", true)]);
        assert!(s.chain.wants_data(Side::Request));
    }

    #[test]
    fn stop_all_and_buffer_past_the_limit_fails_the_stream() {
        let mut s = setup(vec![vec![with(FilterStatus::StopAll { buffer: true })]]);
        s.headers(Side::Request, false).unwrap();
        assert!(matches!(s.data(Side::Request, "123456789", false), Err(Halt::TooLarge)));
    }

    #[test]
    fn a_dropping_filter_loses_that_data_and_an_empty_end_follows_its_release() {
        let mut s = setup(vec![vec![go(), with(FilterStatus::Drop)], vec![]]);
        s.headers(Side::Request, false).unwrap();
        assert_eq!(s.data(Side::Request, "gone", true).unwrap(), []);
        assert_eq!(s.resume(Side::Request, 0).unwrap(), [data("", true)]);
    }

    #[test]
    fn trailers_wait_at_a_stop_all_filter_and_follow_the_body_when_it_resumes() {
        let mut s = setup(vec![vec![with(FilterStatus::StopAll { buffer: false })], vec![]]);
        s.headers(Side::Request, false).unwrap();
        s.data(Side::Request, "ab", false).unwrap();
        assert_eq!(s.trailers(Side::Request).unwrap(), []);
        s.calls();
        let out = s.resume(Side::Request, 0).unwrap();
        assert_eq!(out, [headers(false), data("ab", false), Out::Trailers]);
        assert_eq!(
            s.calls(),
            [
                "a released",
                "b headers end=false",
                r#"a body "ab" end=false"#,
                r#"b body "ab" end=false"#,
                r#"a trailers holding """#,
                r#"b trailers holding """#
            ]
        );
    }

    #[test]
    fn a_buffering_filter_reads_what_it_holds_in_its_trailers_callback() {
        let mut s = setup(vec![vec![go(), with(FilterStatus::Buffer)], vec![]]);
        s.headers(Side::Request, false).unwrap();
        s.data(Side::Request, "ab", false).unwrap();
        s.calls();
        assert_eq!(s.trailers(Side::Request).unwrap(), [data("ab", false), Out::Trailers]);
        assert_eq!(
            s.calls(),
            [r#"a trailers holding "ab""#, "a released", r#"b body "ab" end=false"#, r#"b trailers holding """#]
        );
    }

    #[test]
    fn data_a_filter_makes_in_its_trailers_callback_reaches_the_next_filters_first() {
        let mut s = setup(vec![vec![go(), go(), Reply(FilterStatus::Continue, Some("tail"))], vec![]]);
        s.headers(Side::Request, false).unwrap();
        s.data(Side::Request, "ab", false).unwrap();
        s.calls();
        assert_eq!(s.trailers(Side::Request).unwrap(), [data("tail", false), Out::Trailers]);
        assert_eq!(s.calls(), [r#"a trailers holding """#, r#"b body "tail" end=false"#, r#"b trailers holding """#]);
    }

    #[test]
    fn a_stop_on_trailers_waits_for_the_filter_to_resume() {
        let mut s = setup(vec![vec![go(), go(), with(FilterStatus::StopIteration)], vec![]]);
        s.headers(Side::Request, false).unwrap();
        s.data(Side::Request, "ab", false).unwrap();
        assert_eq!(s.trailers(Side::Request).unwrap(), []);
        assert!(s.chain.is_stopped_at(Side::Request, 0));
        assert_eq!(s.resume(Side::Request, 0).unwrap(), [Out::Trailers]);
    }

    #[test]
    fn a_resume_from_a_filter_that_did_not_stop_changes_nothing() {
        let mut s = setup(vec![vec![with(FilterStatus::StopAll { buffer: false })], vec![]]);
        s.headers(Side::Request, false).unwrap();
        assert_eq!(s.resume(Side::Request, 1).unwrap(), []);
        assert_eq!(s.resume(Side::Response, 0).unwrap(), []);
        assert!(s.chain.is_stopped_at(Side::Request, 0));
    }

    #[test]
    fn a_filter_before_one_that_holds_the_headers_may_hold_body_of_its_own() {
        let mut s = setup(vec![
            vec![go(), go(), with(FilterStatus::Buffer)],
            vec![with(FilterStatus::StopAll { buffer: false })],
        ]);
        assert_eq!(s.headers(Side::Request, false).unwrap(), []);
        assert_eq!(s.data(Side::Request, "x1", false).unwrap(), [], "held by b, unseen");
        assert_eq!(s.data(Side::Request, "x2", false).unwrap(), [], "held by a");
        assert!(s.chain.is_stopped_at(Side::Request, 0) && s.chain.is_stopped_at(Side::Request, 1));
        // b goes on: the headers, then what b held; a still holds x2.
        assert_eq!(s.resume(Side::Request, 1).unwrap(), [headers(false), data("x1", false)]);
        // a goes on with the rest: all it held, after what b let through.
        assert_eq!(s.data(Side::Request, "x3", true).unwrap(), [data("x2x3", true)]);
        assert!(!s.chain.is_stopped_at(Side::Request, 0) && !s.chain.is_stopped_at(Side::Request, 1));
    }

    #[test]
    fn a_filter_that_changes_how_it_holds_keeps_what_it_held() {
        let mut s = setup(vec![vec![
            go(),
            with(FilterStatus::Watermark),
            with(FilterStatus::Buffer),
            with(FilterStatus::Drop),
            go(),
        ]]);
        s.headers(Side::Request, false).unwrap();
        assert_eq!(s.data(Side::Request, "ab", false).unwrap(), []);
        assert_eq!(s.data(Side::Request, "cd", false).unwrap(), [], "watermark, then buffer: ab kept");
        assert_eq!(s.data(Side::Request, "ef", false).unwrap(), [], "sees abcdef, drops: all it held kept");
        assert_eq!(s.data(Side::Request, "", true).unwrap(), [data("abcdef", true)]);
        let calls = s.calls();
        assert_eq!(
            calls[1..],
            [
                r#"a body "ab" end=false"#,
                r#"a body "cd" end=false"#,
                r#"a body "abcdef" end=false"#,
                // After a drop it sees only new data again, as Envoy's.
                r#"a body "" end=true"#,
                "a released"
            ]
        );
    }

    #[test]
    fn a_filter_that_answers_halts_the_direction() {
        let response = ferry_host::LocalResponse {
            status: 403,
            details: String::new(),
            body: Bytes::new(),
            headers: Vec::new(),
            grpc_status: None,
        };
        let mut s = setup(vec![vec![with(FilterStatus::Respond(response))], vec![]]);
        assert!(matches!(s.headers(Side::Request, true), Err(Halt::Respond(r)) if r.status == 403));
        assert_eq!(s.calls(), ["a headers end=true"], "the next filter never saw the headers");
    }

    #[test]
    fn a_local_body_is_one_call_that_ends_the_message() {
        let mut s = setup(vec![vec![], vec![]]);
        let stream = s.stream.clone();
        let out = s.chain.whole(Side::Response, &FilterContext { stream: &stream, signals: None }, Bytes::from("hi"));
        assert_eq!(out.unwrap()[..], [headers(false), data("hi", true)]);
        assert_eq!(
            s.calls(),
            ["b headers end=false", "a headers end=false", r#"b body "hi" end=true"#, r#"a body "hi" end=true"#]
        );
    }

    #[test]
    fn trailers_added_in_the_last_body_callback_end_the_message_after_it() {
        // `a` adds trailers when the body ends: `b` gets the data without the
        // end, then the trailers; what comes out ends with the trailers.
        let mut s = setup(vec![vec![go(), adding_trailers()], vec![]]);
        s.headers(Side::Request, false).unwrap();
        s.calls();
        assert_eq!(s.data(Side::Request, "xy", true).unwrap(), [data("xy", false), Out::Trailers]);
        assert_eq!(s.calls(), [r#"a body "xy" end=true"#, r#"b body "xy" end=false"#, r#"b trailers holding """#]);
    }

    #[test]
    fn trailers_added_by_a_filter_that_held_the_body_follow_it_when_it_resumes() {
        let mut s = setup(vec![vec![go(), Reply(FilterStatus::Buffer, None)], vec![]]);
        s.headers(Side::Request, false).unwrap();
        assert_eq!(s.data(Side::Request, "xy", true).unwrap(), []);
        s.stream
            .borrow_mut()
            .request_trailers
            .append_lowercase(Bytes::from_static(b"x-added"), Bytes::from_static(b"yes"));
        s.calls();
        assert_eq!(s.resume(Side::Request, 0).unwrap(), [data("xy", false), Out::Trailers]);
        assert_eq!(s.calls(), ["a released", r#"b body "xy" end=false"#, r#"b trailers holding """#]);
    }
}
