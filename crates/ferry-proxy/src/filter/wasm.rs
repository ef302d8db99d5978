//! A Proxy-Wasm plugin as an HTTP filter: one stream context per stream,
//! created with the request headers, ended with the stream.
//!
//! A plugin that stops iteration gets the stream parked in its VM, where
//! its later callbacks (an HTTP call's response, a tick, a queue
//! notification) can read and change it and resume, answer or close it;
//! those signals reach the stream's pipeline. What the plugin returned is
//! read as Envoy's Wasm filter reads it: on headers, a stop holds
//! everything after the headers (unless the plugin allows plain
//! `StopIteration`, `allow_on_headers_stop_iteration`); on a body, 1
//! buffers, 2 buffers with backpressure, anything higher drops the data.

use std::rc::Rc;

use ferry_host::{InstanceId, PluginFailure, PluginHandle, SharedStream, StreamCallback, StreamContext, Verdict};

use super::{FilterContext, FilterStatus, HttpFilter, Side};
use crate::event_loop::ThreadLoop;

/// One plugin's view of one stream.
pub(crate) struct WasmFilter {
    thread: Rc<ThreadLoop>,
    handle: PluginHandle,
    /// `allow_on_headers_stop_iteration`: a stop on headers is a plain
    /// `StopIteration` (the plugin still gets the body).
    allow_stop_iteration: bool,
    /// Created with the request headers.
    context: Option<StreamContext>,
    /// The plugin failed and fails open: the stream goes on without it.
    skipped: bool,
    /// The callback each side stopped in, while the plugin holds it.
    stopped: [Option<StreamCallback>; 2],
    /// Its signals go to the stream's pipeline.
    subscribed: bool,
}

impl WasmFilter {
    pub(crate) fn new(thread: Rc<ThreadLoop>, handle: PluginHandle, allow_stop_iteration: bool) -> Self {
        WasmFilter {
            thread,
            handle,
            allow_stop_iteration,
            context: None,
            skipped: false,
            stopped: [None, None],
            subscribed: false,
        }
    }

    /// The context whose signals are this filter's.
    pub(crate) fn signal_key(&self) -> Option<(InstanceId, u32)> {
        self.context.as_ref().map(|c| (c.instance(), c.id()))
    }

    /// Runs a stream callback and reads what the plugin decided.
    fn run(&mut self, callback: StreamCallback, cx: &FilterContext<'_>, eos: bool) -> FilterStatus {
        if self.skipped {
            return FilterStatus::Continue;
        }
        let Some(context) = &self.context else { return FilterStatus::Continue };
        match self.thread.wasm(|vms| vms.stream_callback(context, callback, cx.stream, eos)) {
            Ok(Verdict::Continue) => FilterStatus::Continue,
            Ok(Verdict::LocalResponse(response)) => FilterStatus::Respond(response),
            Ok(Verdict::Close) => FilterStatus::Reset,
            Ok(Verdict::Pause(action)) => {
                let status = self.stop_status(callback, action);
                self.stop(callback, cx).map_or_else(|failure| self.failed(failure), |()| status)
            }
            Err(failure) => self.failed(failure),
        }
    }

    /// A stop action as Envoy's Wasm filter reads it for `callback`.
    fn stop_status(&self, callback: StreamCallback, action: u32) -> FilterStatus {
        match callback {
            StreamCallback::RequestHeaders | StreamCallback::ResponseHeaders => match action {
                1 if self.allow_stop_iteration => FilterStatus::StopIteration,
                3 => FilterStatus::StopAll { buffer: true },
                _ => FilterStatus::StopAll { buffer: false },
            },
            StreamCallback::RequestBody | StreamCallback::ResponseBody => match action {
                1 => FilterStatus::Buffer,
                2 => FilterStatus::Watermark,
                _ => FilterStatus::Drop,
            },
            _ => FilterStatus::StopIteration,
        }
    }

    /// The plugin holds a side of the stream: the stream waits in its VM,
    /// and its signals go to the stream's pipeline.
    fn stop(&mut self, callback: StreamCallback, cx: &FilterContext<'_>) -> Result<(), PluginFailure> {
        let context = self.context.as_ref().expect("a callback ran");
        if !self.thread.wasm(|vms| vms.park(context, cx.stream, callback)) {
            // The VM failed between the callback and now.
            return Err(self.failure());
        }
        if !self.subscribed {
            let signals = cx.signals.expect("a chain with a Wasm filter has a signal sink");
            self.thread.subscribe(context.instance(), context.id(), signals.clone());
            self.subscribed = true;
        }
        self.stopped[side_of(callback).index()] = Some(callback);
        Ok(())
    }

    /// A failure, by the plugin's policy: go on without it, or fail the stream.
    fn failed(&mut self, failure: PluginFailure) -> FilterStatus {
        if failure.fail_open {
            self.skipped = true;
            FilterStatus::Continue
        } else {
            FilterStatus::Failed
        }
    }

    /// The plugin's VM failed while it held the stream (the host logged
    /// why): whether the stream goes on without it.
    pub(crate) fn vm_failed(&mut self) -> bool {
        self.stopped = [None, None];
        let fail_open = self.failure().fail_open;
        self.skipped = fail_open;
        fail_open
    }

    fn failure(&self) -> PluginFailure {
        self.thread.wasm(|vms| {
            let plugin = vms.plugin(self.handle);
            PluginFailure {
                plugin: plugin.display_name().to_owned(),
                vm_id: plugin.module.vm_id().to_owned(),
                reason: "its VM failed while the stream waited for it".into(),
                fail_open: plugin.failure_policy.fails_open(),
            }
        })
    }
}

/// The side a stream callback is about.
fn side_of(callback: StreamCallback) -> Side {
    match callback {
        StreamCallback::ResponseHeaders | StreamCallback::ResponseBody | StreamCallback::ResponseTrailers => {
            Side::Response
        }
        _ => Side::Request,
    }
}

impl HttpFilter for WasmFilter {
    fn request_headers(&mut self, cx: &FilterContext<'_>, end_of_stream: bool) -> FilterStatus {
        match self.thread.wasm(|vms| vms.create_http_stream(self.handle)) {
            Ok(context) => self.context = Some(context),
            Err(failure) => return self.failed(failure),
        }
        self.run(StreamCallback::RequestHeaders, cx, end_of_stream)
    }

    fn response_headers(&mut self, cx: &FilterContext<'_>, end_of_stream: bool) -> FilterStatus {
        self.run(StreamCallback::ResponseHeaders, cx, end_of_stream)
    }

    fn body(&mut self, side: Side, cx: &FilterContext<'_>, end_of_stream: bool) -> FilterStatus {
        let callback = match side {
            Side::Request => StreamCallback::RequestBody,
            Side::Response => StreamCallback::ResponseBody,
        };
        self.run(callback, cx, end_of_stream)
    }

    fn trailers(&mut self, side: Side, cx: &FilterContext<'_>) -> FilterStatus {
        let callback = match side {
            Side::Request => StreamCallback::RequestTrailers,
            Side::Response => StreamCallback::ResponseTrailers,
        };
        self.run(callback, cx, true)
    }

    fn released(&mut self, side: Side, stream: &SharedStream) {
        self.stopped[side.index()] = None;
        let Some(context) = &self.context else { return };
        // Still holding the other side: the stream stays parked, as that side left it.
        match self.stopped.iter().flatten().next() {
            Some(&callback) => {
                let _ = self.thread.wasm(|vms| vms.park(context, stream, callback));
            }
            None => self.thread.wasm(|vms| vms.unpark(context)),
        }
    }

    fn finish(self, stream: &SharedStream) {
        if let Some(context) = self.context {
            if self.subscribed {
                self.thread.unsubscribe(context.instance(), context.id());
            }
            self.thread.wasm(|vms| vms.finish_http_stream(context, stream));
        }
    }
}
