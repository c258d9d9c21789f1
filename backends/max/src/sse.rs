//! A minimal server-sent-events reader: the `data` of each event, in order.

use std::io::BufRead;

/// One item read from an event stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum SseItem {
    /// An event's data (its `data:` lines joined with `\n`).
    Data(String),
    /// `data: [DONE]`, OpenAI's end marker.
    Done,
}

/// Reads events from `reader`; `None` at end of stream.
#[derive(Debug)]
pub(crate) struct SseReader<R> {
    reader: R,
    line: String,
}

impl<R: BufRead> SseReader<R> {
    pub(crate) fn new(reader: R) -> Self {
        Self {
            reader,
            line: String::new(),
        }
    }

    /// The next event, `Ok(None)` at end of stream. An event still open at end of stream is
    /// returned (a missing final blank line is tolerated).
    pub(crate) fn next_event(&mut self) -> std::io::Result<Option<SseItem>> {
        let mut data: Option<String> = None;
        loop {
            self.line.clear();
            let n = self.reader.read_line(&mut self.line)?;
            if n == 0 {
                return Ok(data.map(finish));
            }
            let line = self.line.trim_end_matches(['\r', '\n']);
            if line.is_empty() {
                if let Some(d) = data.take() {
                    return Ok(Some(finish(d)));
                }
                continue;
            }
            if line.starts_with(':') {
                continue; // comment / keep-alive
            }
            let (field, value) = match line.split_once(':') {
                Some((f, v)) => (f, v.strip_prefix(' ').unwrap_or(v)),
                None => (line, ""),
            };
            if field == "data" {
                match &mut data {
                    Some(d) => {
                        d.push('\n');
                        d.push_str(value);
                    }
                    None => data = Some(value.to_owned()),
                }
            }
            // `event`, `id`, `retry`: not used by the OpenAI API.
        }
    }
}

fn finish(d: String) -> SseItem {
    if d.trim() == "[DONE]" {
        SseItem::Done
    } else {
        SseItem::Data(d)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_events_comments_crlf_and_done() {
        let s = ": keep-alive\r\ndata: {\"a\":1}\r\n\r\nevent: x\ndata: l1\ndata:l2\n\n\n\ndata: [DONE]\n\n";
        let mut r = SseReader::new(s.as_bytes());
        assert_eq!(
            r.next_event().unwrap(),
            Some(SseItem::Data("{\"a\":1}".into()))
        );
        assert_eq!(
            r.next_event().unwrap(),
            Some(SseItem::Data("l1\nl2".into()))
        );
        assert_eq!(r.next_event().unwrap(), Some(SseItem::Done));
        assert_eq!(r.next_event().unwrap(), None);
    }

    #[test]
    fn unterminated_last_event_is_returned() {
        let mut r = SseReader::new("data: x".as_bytes());
        assert_eq!(r.next_event().unwrap(), Some(SseItem::Data("x".into())));
        assert_eq!(r.next_event().unwrap(), None);
    }
}
