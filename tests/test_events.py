import json

from lambda_enqueue.events import decode


def s3_record(key, event="ObjectCreated:Put", version=None):
    obj = {"key": key, "size": 10, "eTag": "abc", "sequencer": "0A1"}
    if version:
        obj["versionId"] = version
    return {
        "eventSource": "aws:s3",
        "eventName": event,
        "s3": {"bucket": {"name": "b"}, "object": obj},
    }


def test_direct_s3_event_decodes_form_encoded_keys():
    items, from_sqs = decode(
        {"Records": [s3_record("in/my+file%2B1+%C3%A9t%C3%A9.csv", version="v1")]}
    )
    assert not from_sqs
    (ev,) = items[0].events
    assert ev.key == "in/my file+1 été.csv"
    assert ev.version_id == "v1" and ev.etag == "abc" and ev.sequencer == "0A1" and ev.is_created


def test_sqs_envelope_with_sns_inside_and_test_event():
    s3_event = {"Records": [s3_record("in/a.csv")]}
    sns_in_sqs = {"Type": "Notification", "Message": json.dumps(s3_event)}
    test_event = {"Service": "Amazon S3", "Event": "s3:TestEvent", "Bucket": "b"}
    event = {
        "Records": [
            {"eventSource": "aws:sqs", "messageId": "m1", "body": json.dumps(s3_event)},
            {"eventSource": "aws:sqs", "messageId": "m2", "body": json.dumps(sns_in_sqs)},
            {"eventSource": "aws:sqs", "messageId": "m3", "body": json.dumps(test_event)},
            {"eventSource": "aws:sqs", "messageId": "m4", "body": "not json"},
        ]
    }
    items, from_sqs = decode(event)
    assert from_sqs
    assert [i.message_id for i in items] == ["m1", "m2", "m3", "m4"]
    assert [e.key for e in items[0].events] == ["in/a.csv"]
    assert [e.key for e in items[1].events] == ["in/a.csv"]
    assert items[2].events == [] and "TestEvent" in items[2].notes[0]
    assert items[3].events == [] and "not JSON" in items[3].problems[0]


def test_sns_event():
    msg = json.dumps({"Records": [s3_record("in/x+y.csv")]})
    items, from_sqs = decode({"Records": [{"EventSource": "aws:sns", "Sns": {"Message": msg}}]})
    assert not from_sqs and items[0].events[0].key == "in/x y.csv"


def test_eventbridge_keys_are_not_decoded():
    ev = {
        "version": "0",
        "detail-type": "Object Created",
        "source": "aws.s3",
        "detail": {
            "bucket": {"name": "b"},
            "object": {"key": "in/a+b.csv", "size": 5, "etag": "e", "version-id": "v"},
        },
    }
    items, _ = decode(ev)
    (e,) = items[0].events
    assert e.key == "in/a+b.csv" and e.version_id == "v" and e.is_created


def test_delete_events_are_not_created_events():
    items, _ = decode({"Records": [s3_record("in/a.csv", event="ObjectRemoved:Delete")]})
    assert not items[0].events[0].is_created


def test_unknown_events_are_problems_not_exceptions():
    (item,), from_sqs = decode({"hello": "world"})
    assert not from_sqs and item.events == []
    assert "not an S3, SNS, SQS or EventBridge event" in item.problems[0]
