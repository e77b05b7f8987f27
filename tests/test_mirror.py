"""``ConversationMirror`` when another writer commits while it reads.

``get_tail`` reads the conversation's counters and its newest messages from one snapshot: on
SQLite two statements in one transaction (the other writer commits between them here), on
PostgreSQL one statement (under READ COMMITTED two statements would each take their own, and
a message appended or deleted between them would leave counters that do not count what was
read). Either way the mirror must hand out no message twice, lose none, never answer one
deleted before its read, and come back to what a fresh read answers.
"""

from __future__ import annotations

from collections.abc import Sequence

from chatmemory import ChatMemory, Message, NewMessage, Principal
from chatmemory.mirror import ConversationMirror, Handouts
from tests.transactions import committed_before_messages


def _contents(messages: Sequence[Message]) -> list[str]:
    return [m.content for m in messages]


async def test_an_append_between_the_statements_of_a_read_is_neither_lost_nor_doubled(
    db_url: str, memory: ChatMemory
) -> None:
    chat = memory.scoped(Principal("alice"))
    conversation = await chat.start_conversation()
    run = await chat.start_history(conversation.id, model="m")
    await chat.append_messages(run.id, [NewMessage("user", f"m{i}") for i in range(3)])
    mirror: ConversationMirror[str] = ConversationMirror(_contents)
    async with ChatMemory.open(db_url) as elsewhere:
        other = elsewhere.scoped(Principal("alice"))
        appended: list[str] = []

        async def append_elsewhere() -> None:
            text = f"elsewhere {len(appended)}"
            await other.append_messages(run.id, [NewMessage("user", text)])
            appended.append(text)

        async def read(racing: bool) -> list[str]:
            if not racing:
                values, _ = await mirror.read(chat, conversation.id)
                return list(values)
            # After the conversation's counters were read, before its messages are: another
            # store commits one more message.
            with committed_before_messages(memory, append_elsewhere) as done:
                values, _ = await mirror.read(chat, conversation.id)
            assert done  # the other store did commit in the middle of the read
            return list(values)

        for racing in (True, False, True, False, False):  # a whole read, then refreshes
            before = len(appended)
            read_ = await read(racing)
            assert len(read_) == len(set(read_)), read_  # nothing twice
            assert read_ in (["m0", "m1", "m2", *appended[:before]], ["m0", "m1", "m2", *appended]), read_
            if not racing:  # nothing changed during it: what a fresh read answers
                assert read_ == _contents(await chat.transcript(conversation.id))
        assert read_ == ["m0", "m1", "m2", "elsewhere 0", "elsewhere 1"]


async def test_a_mirror_never_answers_a_message_deleted_before_its_read(
    db_url: str, memory: ChatMemory
) -> None:
    """A mirrored message deleted and one appended before a read began, and the appended one
    deleted while it reads: were the count read apart from the messages (before the second
    deletion), it would match the mirrored messages plus those read, and the mirror would
    keep the one deleted before."""
    chat = memory.scoped(Principal("alice"))
    conversation = await chat.start_conversation()
    run = await chat.start_history(conversation.id, model="m")
    first, *_ = await chat.append_messages(run.id, [NewMessage("user", f"m{i}") for i in range(3)])
    mirror: ConversationMirror[str] = ConversationMirror(_contents)
    assert list((await mirror.read(chat, conversation.id))[0]) == ["m0", "m1", "m2"]
    await chat.delete_message(first.id)
    (late,) = await chat.append_messages(run.id, [NewMessage("user", "m3")])
    async with ChatMemory.open(db_url) as elsewhere:
        other = elsewhere.scoped(Principal("alice"))
        with committed_before_messages(memory, lambda: other.delete_message(late.id)) as done:
            values, _ = await mirror.read(chat, conversation.id)
        assert done
    # As the store was when the read began (m1, m2, m3) or when it ended (m1, m2); never m0.
    assert list(values) in (["m1", "m2", "m3"], ["m1", "m2"])


async def test_a_whole_read_gives_the_conversation_as_read_with_the_messages(memory: ChatMemory) -> None:
    """``read_whole`` answers the conversation and its last ``seq`` of the same read: fresh when
    only the conversation changed, even in what leaves its ``updated_at`` as it was (pinning)."""
    chat = memory.scoped(Principal("alice"))
    conversation = await chat.start_conversation(title="first", metadata={"k": 0})
    run = await chat.start_history(conversation.id, model="m")
    await chat.append_messages(run.id, [NewMessage("user", f"m{i}") for i in range(3)])
    mirror: ConversationMirror[str] = ConversationMirror(_contents)
    read = await mirror.read_whole(chat, conversation.id)
    assert (read.values, read.last_seq, read.conversation.title) == (("m0", "m1", "m2"), 3, "first")
    await chat.update_conversation(conversation.id, title="second", metadata={"k": 1})
    for _ in range(2):  # the read that finds the change, then one that finds none
        read = await mirror.read_whole(chat, conversation.id)
        assert read.values == ("m0", "m1", "m2") and read.last_seq == 3
        assert read.conversation == (await chat.get_tail(conversation.id, limit=0)).conversation
        assert (read.conversation.title, read.conversation.metadata) == ("second", {"k": 1})
    await chat.update_conversation(conversation.id, pinned=True)
    read = await mirror.read_whole(chat, conversation.id)
    assert read.values == ("m0", "m1", "m2") and read.conversation.pinned_at is not None


def test_handouts_hand_out_again_per_key_what_is_unchanged_for_the_newest_keys_only() -> None:
    """``Handouts`` keeps, per key, what it handed out for each source (by identity), for the
    ``size`` keys read most recently; a value changed in place is made anew."""
    made: list[str] = []

    def make(source: str) -> list[str]:
        made.append(source)
        return [source]

    handouts: Handouts[str, list[str]] = Handouts(make, lambda source: [source], size=2)
    a, b = "a" * 40, "b" * 40  # distinct objects, kept alive by the test
    first = handouts.hand_out([a, b], "k1")
    assert handouts.hand_out([a, b], "k1") == first and made == [a, b]
    assert all(x is y for x, y in zip(handouts.hand_out([a, b], "k1"), first, strict=True))

    first[0].append("changed")
    again = handouts.hand_out([a, b], "k1")
    assert again == [[a], [b]] and again[0] is not first[0] and again[1] is first[1]

    handouts.hand_out([a], "k2")
    handouts.hand_out([b], "k3")  # k1, read least recently, is dropped
    assert handouts.hand_out([a, b], "k1")[1] is not first[1]
    handouts.forget("k1")
    made.clear()
    handouts.hand_out([a], "k1")
    assert made == [a]
