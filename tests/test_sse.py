"""Server-sent events split into events: the pure decoder the worker runs for codecs."""

from inferwatch.ingest.sse import SseDecoder, SseEvent, event_data, is_event_stream, split_events


def test_data_lines_are_joined_and_comments_skipped():
    body = b": keep-alive\n\ndata: first\ndata: second\n\nevent: token\nid: 7\ndata:{\"a\": 1}\n\n"
    assert split_events(body) == [SseEvent("first\nsecond"), SseEvent('{"a": 1}', event="token", id="7")]


def test_crlf_and_cr_line_ends_and_one_leading_space_dropped():
    assert split_events(b"data:  two spaces\r\n\r\ndata: x\r\rdata: y\n\n") == [
        SseEvent(" two spaces"), SseEvent("x"), SseEvent("y")]


def test_done_ends_what_codecs_read():
    events = split_events(b"data: 1\n\ndata: 2\n\ndata: [DONE]\n\n")
    assert events[-1].done and event_data(events) == ["1", "2"]


def test_an_event_split_across_chunks_even_inside_crlf_and_utf8():
    body = "data: é one\r\n\r\ndata: two\r\n\r\n".encode()
    whole = split_events(body)
    for cut in range(1, len(body)):
        decoder = SseDecoder()
        assert decoder.feed(body[:cut]) + decoder.feed(body[cut:]) == whole, cut
    assert [e.data for e in whole] == ["é one", "two"]


def test_an_unfinished_last_event_and_an_event_without_data_are_not_dispatched():
    assert split_events(b"event: ping\n\ndata: cut off") == []


def test_media_type():
    assert is_event_stream("text/event-stream; charset=utf-8") and not is_event_stream("application/json")
    assert not is_event_stream(None)
