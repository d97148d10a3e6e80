//! What the engine loop is sent and what it hands back: plain types shared by the loop
//! and its handle.

use tokio::sync::{mpsc, oneshot};

use super::config::SubmitError;
use super::queue::QueueFull;
use super::sequence::Sequence;
use crate::generation::{GenerationEvent, GenerationRequest};

/// The loop's answer to a submission: queued, or refused with the request given back.
pub(super) type Admission = oneshot::Sender<Result<(), (QueueFull, Unstarted)>>;

/// A request and its client's channel, not yet started anywhere.
#[derive(Debug)]
pub struct Unstarted {
    /// The request.
    pub request: GenerationRequest,
    /// Where its events go.
    pub events: mpsc::Sender<GenerationEvent>,
}

impl Unstarted {
    /// A request with a new event channel; the receiver is the client's end.
    pub fn new(request: GenerationRequest) -> (Self, mpsc::Receiver<GenerationEvent>) {
        let (events, receiver) = Sequence::event_channel();
        (Self { request, events }, receiver)
    }
}

pub(super) struct Submission {
    pub work: Unstarted,
    pub admitted: Admission,
}

pub(super) enum Command {
    Submit(Submission),
    /// Stop: hand back what has not started, end what has with an error.
    Evacuate(String),
}

/// Why an engine loop stopped, and the requests it hands back.
#[derive(Debug)]
pub struct EngineExit {
    /// The fault (a step's error or panic) or the evacuation's reason.
    pub reason: String,
    /// Requests that streamed nothing: queued, mid-prompt, or submitted and not read.
    pub unstarted: Vec<Unstarted>,
}

/// Why a submission was not queued, with the request when it can still go elsewhere.
#[derive(Debug)]
pub struct Refused {
    /// Why.
    pub error: SubmitError,
    /// The request and its channel, when the loop never took them.
    pub work: Option<Unstarted>,
}

impl Refused {
    pub(super) fn kept(error: SubmitError, work: Unstarted) -> Self {
        Self {
            error,
            work: Some(work),
        }
    }
}
