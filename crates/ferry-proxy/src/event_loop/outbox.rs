//! Queue notifications on their way to other threads.
//!
//! Sending one message per item would wake the owner's thread once per
//! item: eight wake-ups (and, on a shared core, eight context switches) for
//! one request of the shared_queue example. Instead, posts collect in this
//! thread's outbox and a task of this thread sends them, one message per
//! destination, once the tasks that are ready now have run. Each item
//! still gets exactly one `proxy_on_queue_ready`, later and on the owner's
//! thread.

use std::cell::RefCell;
use std::rc::Rc;

use ferry_host::{QueueReady, ThreadMailbox};
use tokio::sync::Notify;

use super::{Inbox, ThreadMessage};

/// Most notifications a thread holds before sending them anyway.
const MAX_PENDING_NOTIFICATIONS: usize = 1024;

#[derive(Default)]
struct Outbox {
    /// Wakes this thread's sending task; `None` on threads without one,
    /// which send at once.
    sender_task: Option<Rc<Notify>>,
    pending: Vec<(Inbox, Vec<QueueReady>)>,
    count: usize,
}

thread_local! {
    static OUTBOX: RefCell<Outbox> = RefCell::new(Outbox::default());
}

impl Outbox {
    fn take(&mut self) -> Vec<(Inbox, Vec<QueueReady>)> {
        self.count = 0;
        std::mem::take(&mut self.pending)
    }
}

fn send(batches: Vec<(Inbox, Vec<QueueReady>)>) {
    for (inbox, batch) in batches {
        // A closed channel means the thread is gone: the notification is
        // dropped and the item stays in the queue.
        let _ = inbox.send(ThreadMessage::QueueReady(batch));
    }
}

/// A thread's inbox as the host sees it: an unbounded channel into its
/// event loop. Unbounded because a producer must never block or drop an
/// item's notification.
pub(crate) struct ChannelMailbox(pub(crate) Inbox);

impl ThreadMailbox for ChannelMailbox {
    fn post_queue_ready(&self, notice: QueueReady) {
        let full = OUTBOX.with(|outbox| {
            let mut outbox = outbox.borrow_mut();
            let Some(task) = outbox.sender_task.clone() else {
                return Some(vec![(self.0.clone(), vec![notice])]);
            };
            match outbox.pending.iter_mut().find(|(inbox, _)| inbox.same_channel(&self.0)) {
                Some((_, batch)) => batch.push(notice),
                None => outbox.pending.push((self.0.clone(), vec![notice])),
            }
            outbox.count += 1;
            if outbox.count == 1 {
                task.notify_one();
            }
            (outbox.count >= MAX_PENDING_NOTIFICATIONS).then(|| outbox.take())
        });
        if let Some(batches) = full {
            send(batches);
        }
    }
}

/// This thread's sending task: sends what the outbox holds whenever it gets
/// a turn. Runs until the thread's runtime stops.
pub(crate) async fn run_outbox() {
    let task = Rc::new(Notify::new());
    OUTBOX.with(|outbox| outbox.borrow_mut().sender_task = Some(task.clone()));
    loop {
        task.notified().await;
        send(OUTBOX.with(|outbox| outbox.borrow_mut().take()));
    }
}
