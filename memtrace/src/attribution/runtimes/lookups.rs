//! Runtime state read off the event pipeline: a thread asks [`RuntimeState`] for each new
//! container and retries for a while, since a runtime may write its state a moment after the
//! container's cgroup appears.

use std::{
    sync::mpsc::{self, Receiver, RecvTimeoutError, Sender},
    thread,
    time::{Duration, Instant},
};

use super::{RuntimeNames, RuntimeState};

/// When a container not found yet is looked up again, after the first try: 4.4 s in all.
const RETRIES: [Duration; 5] = [
    Duration::from_millis(20),
    Duration::from_millis(100),
    Duration::from_millis(300),
    Duration::from_secs(1),
    Duration::from_secs(3),
];

struct Request {
    runtime: Option<&'static str>,
    container_id: String,
}

/// Looks containers up in the runtimes' state on a thread of its own, started on the first
/// [`ask`](Self::ask). Answers are collected with [`answers`](Self::answers), which never
/// waits.
pub struct RuntimeLookups {
    state: Option<RuntimeState>,
    requests: Option<Sender<Request>>,
    answers: Option<Receiver<(String, RuntimeNames)>>,
}

impl Default for RuntimeLookups {
    fn default() -> Self {
        Self::new(RuntimeState::default())
    }
}

impl RuntimeLookups {
    #[must_use]
    pub fn new(state: RuntimeState) -> Self {
        Self {
            state: Some(state),
            requests: None,
            answers: None,
        }
    }

    /// Looks container `container_id` up, by the runtime its cgroup path named first.
    pub fn ask(&mut self, runtime: Option<&'static str>, container_id: &str) {
        if self.requests.is_none()
            && let Some(state) = self.state.take()
        {
            let (requests, their_requests) = mpsc::channel();
            let (their_answers, answers) = mpsc::channel();
            let started = thread::Builder::new()
                .name("memtrace-runtimes".into())
                .spawn(move || serve(state, &their_requests, &their_answers));
            if let Err(e) = started {
                log::warn!("container names from the runtimes' state are off: {e}");
                return;
            }
            self.requests = Some(requests);
            self.answers = Some(answers);
        }
        if let Some(requests) = &self.requests {
            let _ = requests.send(Request {
                runtime,
                container_id: container_id.to_owned(),
            });
        }
    }

    /// The containers named since the last call.
    pub fn answers(&self) -> impl Iterator<Item = (String, RuntimeNames)> + '_ {
        self.answers.iter().flat_map(Receiver::try_iter)
    }
}

/// Serves lookups until the asking side is dropped.
fn serve(
    mut state: RuntimeState,
    requests: &Receiver<Request>,
    answers: &Sender<(String, RuntimeNames)>,
) {
    // (when, tries so far, request), in no order: few containers start at once.
    let mut pending: Vec<(Instant, usize, Request)> = Vec::new();
    loop {
        let now = Instant::now();
        let wait = pending
            .iter()
            .map(|(due, ..)| due.saturating_duration_since(now))
            .min()
            .unwrap_or(Duration::from_secs(3600));
        match requests.recv_timeout(wait) {
            Ok(request) => pending.push((Instant::now(), 0, request)),
            Err(RecvTimeoutError::Timeout) => {}
            Err(RecvTimeoutError::Disconnected) => return,
        }
        let now = Instant::now();
        let mut i = 0;
        while i < pending.len() {
            if pending[i].0 > now {
                i += 1;
                continue;
            }
            let (_, tries, request) = pending.swap_remove(i);
            let started = Instant::now();
            let found = state.lookup(request.runtime, &request.container_id);
            log::debug!(
                "runtime state of {} (try {}): {found:?} in {:?}",
                request.container_id,
                tries + 1,
                started.elapsed()
            );
            match found {
                Some(names) => {
                    if answers.send((request.container_id, names)).is_err() {
                        return;
                    }
                }
                None => {
                    if let Some(delay) = RETRIES.get(tries) {
                        pending.push((now + *delay, tries + 1, request));
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::fs;

    use super::*;
    use crate::attribution::{container::test_ids::DOCKER_ID, runtime};

    #[test]
    fn a_container_whose_state_comes_late_is_found_on_a_retry() {
        let root = tempfile::tempdir().expect("tempdir");
        let mut lookups = RuntimeLookups::new(RuntimeState::new(root.path()));
        lookups.ask(Some(runtime::DOCKER), DOCKER_ID);
        thread::sleep(Duration::from_millis(50));
        assert_eq!(lookups.answers().count(), 0, "not written yet");
        let dir = root
            .path()
            .join("var/lib/docker/containers")
            .join(DOCKER_ID);
        fs::create_dir_all(&dir).expect("mkdir");
        fs::write(
            dir.join("config.v2.json"),
            r#"{"Name":"/hog","Config":{"Image":"busybox"}}"#,
        )
        .expect("write");
        let deadline = Instant::now() + Duration::from_secs(3);
        let answer = loop {
            if let Some(answer) = lookups.answers().next() {
                break answer;
            }
            assert!(Instant::now() < deadline, "no answer");
            thread::sleep(Duration::from_millis(10));
        };
        assert_eq!(answer.0, DOCKER_ID);
        assert_eq!(answer.1.name.as_deref(), Some("hog"));
    }
}
