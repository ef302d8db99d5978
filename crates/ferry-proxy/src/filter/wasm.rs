//! A Proxy-Wasm plugin as an HTTP filter: one stream context per stream,
//! created with the request headers, ended with the stream.
//!
//! A plugin that pauses the stream gets it parked in its VM, where later
//! callbacks of the plugin (an HTTP call's response, a tick, a queue
//! notification) can read and change it; the filter waits until the plugin
//! resumes, answers or closes the stream, or its VM fails.

use std::rc::Rc;

use ferry_host::{HttpStream, PluginFailure, PluginHandle, StreamAction, StreamCallback, StreamContext, Verdict};

use super::{FilterStatus, HttpFilter, Side};
use crate::event_loop::ThreadLoop;

/// One plugin's view of one stream.
pub(crate) struct WasmFilter {
    thread: Rc<ThreadLoop>,
    handle: PluginHandle,
    /// Created with the request headers.
    context: Option<StreamContext>,
    /// The plugin failed and fails open: the stream goes on without it.
    skipped: bool,
    /// The stream is parked in the plugin's VM while the filter waits.
    parked: bool,
}

impl WasmFilter {
    pub(crate) fn new(thread: Rc<ThreadLoop>, handle: PluginHandle) -> Self {
        WasmFilter { thread, handle, context: None, skipped: false, parked: false }
    }

    /// Runs a stream callback and follows what the plugin decided.
    async fn run(&mut self, callback: StreamCallback, stream: &mut HttpStream, eos: bool) -> FilterStatus {
        match self.call(callback, stream, eos) {
            None => FilterStatus::Continue,
            Some(Ok(verdict)) => self.follow(verdict, stream, callback).await,
            Some(Err(failure)) => self.failed(failure),
        }
    }

    /// The callback's verdict, or `None` if the plugin is not (or no longer) on the stream.
    fn call(
        &mut self,
        callback: StreamCallback,
        stream: &mut HttpStream,
        eos: bool,
    ) -> Option<Result<Verdict, PluginFailure>> {
        if self.skipped {
            return None;
        }
        let context = self.context.as_ref()?;
        Some(self.thread.wasm(|vms| vms.stream_callback(context, callback, stream, eos)))
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

    /// What a verdict of `callback` means for the stream; waits out a pause.
    async fn follow(&mut self, verdict: Verdict, stream: &mut HttpStream, callback: StreamCallback) -> FilterStatus {
        match verdict {
            Verdict::Continue => FilterStatus::Continue,
            Verdict::LocalResponse(response) => FilterStatus::Respond(response),
            Verdict::Close => FilterStatus::Reset,
            Verdict::Pause => self.wait(stream, callback).await,
        }
    }

    /// Parks the stream (paused in `callback`) in the plugin's VM and waits
    /// for the plugin to resume, answer or close it (or for its VM to fail).
    async fn wait(&mut self, stream: &mut HttpStream, callback: StreamCallback) -> FilterStatus {
        let Some(context) = &self.context else { return FilterStatus::Continue };
        let (instance, id) = (context.instance(), context.id());
        let parked = self.thread.wasm(|vms| vms.park(context, std::mem::take(stream), callback));
        if let Some(given_back) = parked {
            // The VM failed between the callback and now.
            *stream = given_back;
            let failure = self.vm_failed();
            return self.failed(failure);
        }
        self.parked = true;
        let action = self.thread.wait_for(instance, id).await.unwrap_or(StreamAction::Failed);
        self.parked = false;
        let context = self.context.as_ref().expect("set above");
        *stream = self.thread.wasm(|vms| vms.unpark(context)).unwrap_or_default();
        match action {
            StreamAction::Resume | StreamAction::ResumeUpstream => FilterStatus::Continue,
            StreamAction::Close => FilterStatus::Reset,
            StreamAction::LocalResponse(response) => FilterStatus::Respond(response),
            StreamAction::Failed => {
                let failure = self.vm_failed();
                self.failed(failure)
            }
        }
    }

    /// The plugin's VM failed while it held the stream (the host logged why).
    fn vm_failed(&self) -> PluginFailure {
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

impl HttpFilter for WasmFilter {
    async fn request_headers(&mut self, stream: &mut HttpStream, end_of_stream: bool) -> FilterStatus {
        match self.thread.wasm(|vms| vms.create_http_stream(self.handle)) {
            Ok(context) => self.context = Some(context),
            Err(failure) => return self.failed(failure),
        }
        self.run(StreamCallback::RequestHeaders, stream, end_of_stream).await
    }

    async fn response_headers(&mut self, stream: &mut HttpStream, end_of_stream: bool) -> FilterStatus {
        self.run(StreamCallback::ResponseHeaders, stream, end_of_stream).await
    }

    async fn body(&mut self, side: Side, stream: &mut HttpStream, end_of_stream: bool) -> FilterStatus {
        let callback = match side {
            Side::Request => StreamCallback::RequestBody,
            Side::Response => StreamCallback::ResponseBody,
        };
        match self.call(callback, stream, end_of_stream) {
            None => FilterStatus::Continue,
            // StopIterationAndBuffer before the end: hold it.
            Some(Ok(Verdict::Pause)) if !end_of_stream => FilterStatus::Buffer,
            Some(Ok(verdict)) => self.follow(verdict, stream, callback).await,
            Some(Err(failure)) => self.failed(failure),
        }
    }

    async fn trailers(&mut self, side: Side, stream: &mut HttpStream) -> FilterStatus {
        let callback = match side {
            Side::Request => StreamCallback::RequestTrailers,
            Side::Response => StreamCallback::ResponseTrailers,
        };
        self.run(callback, stream, true).await
    }

    fn reclaim(&mut self, stream: &mut HttpStream) {
        let Some(context) = self.context.as_ref().filter(|_| self.parked) else { return };
        self.parked = false;
        self.thread.forget_waiter(context.instance(), context.id());
        if let Some(parked) = self.thread.wasm(|vms| vms.unpark(context)) {
            *stream = parked;
        }
    }

    fn finish(self, stream: &mut HttpStream) {
        if let Some(context) = self.context {
            self.thread.wasm(|vms| vms.finish_http_stream(context, stream));
        }
    }
}
