import json

from lambda_enqueue.events import decode
from tests.helpers import load_event, s3_notification, sqs_record


def test_direct_s3_event_decodes_form_encoded_keys():
    items, from_sqs = decode(load_event("s3-put-encoded-key.json", etag="abc", version="v1"))
    assert not from_sqs
    (ev,) = items[0].events
    assert ev.key == "in/my file+1 été.csv"
    assert ev.version_id == "v1" and ev.etag == "abc" and ev.is_created
    assert ev.sequencer == "0066E8A3B2C4D5E6F7"


def test_sqs_envelope_with_sns_inside_and_test_event():
    s3_event = load_event("s3-put.json")
    (sns_in_sqs,) = load_event("sqs-sns-s3.json")["Records"]
    test_event = load_event("s3-test-event.json")
    event = s3_notification(
        sqs_record("m1", json.dumps(s3_event)),
        {**sns_in_sqs, "messageId": "m2"},
        sqs_record("m3", json.dumps(test_event)),
        sqs_record("m4", "not json"),
    )
    items, from_sqs = decode(event)
    assert from_sqs
    assert [i.message_id for i in items] == ["m1", "m2", "m3", "m4"]
    assert [e.key for e in items[0].events] == ["in/2026/q3 report.csv"]
    assert [e.key for e in items[1].events] == ["in/bigé.csv"]
    assert items[2].events == [] and "TestEvent" in items[2].notes[0]
    assert items[3].events == [] and "not JSON" in items[3].problems[0]


def test_sns_event():
    items, from_sqs = decode(load_event("sns-s3.json"))
    assert not from_sqs and items[0].events[0].key == "in/x y.csv"


def test_eventbridge_keys_are_not_decoded():
    items, _ = decode(load_event("eventbridge-object-created.json", etag="e", version="v"))
    (e,) = items[0].events
    assert e.key == "in/eb+plus.csv" and e.version_id == "v" and e.is_created


def test_eventbridge_keys_are_used_as_they_are_whatever_they_hold():
    """Issue 24's suspicion, settled: EventBridge "Object Created" events carry the key
    as it is (AWS's own guidance sample guidance-for-medialake-on-aws tested keys such
    as "test+b.png", "ARTISTS K to O.png" and "%2B++ %20.mp3" against real EventBridge
    events and uses them as they come; S3's own notifications encode them form-style,
    "+" for a space). Decoding them would turn these into other keys."""
    event = load_event("eventbridge-object-created.json", etag="e", version="v")
    for key in ("in/test+b.csv", "in/ARTISTS K to O.csv", "in/%2B++ %20.csv"):
        event["detail"]["object"]["key"] = key
        items, _ = decode(event)
        assert [e.key for e in items[0].events] == [key]


def test_delete_events_are_not_created_events():
    items, _ = decode(load_event("s3-delete.json", version="v"))
    (e,) = items[0].events
    assert not e.is_created and e.key == "in/2026/q3 report.csv"


def test_unknown_events_are_problems_not_exceptions():
    (item,), from_sqs = decode({"hello": "world"})
    assert not from_sqs and item.events == []
    assert "not an S3, SNS, SQS or EventBridge event" in item.problems[0]
