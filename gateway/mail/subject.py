"""
The "base subject" of RFC 5256 2.1: a Subject with its reply and forward
artifacts ("Re:", "Fwd:", "[list]" tags, "(fwd)", "[fwd: ...]") removed,
which SORT SUBJECT and both THREAD algorithms compare.

Pure: no Twisted.  Works on text positions, never re-slicing the subject,
so a hostile subject of thousands of tags costs one pass, not one per tag.
"""

from __future__ import annotations

import re

import attrs

# RFC 5256 5: subj-blob = "[" *BLOBCHAR "]" *WSP; BLOBCHAR is any octet but
# NUL, "[" and "]".
_BLOB = re.compile(r"\[[^\[\]\x00]*\][ \t]*")
# subj-refwd = ("re" / ("fw" ["d"])) *WSP [subj-blob] ":"
_REFWD = re.compile(r"(?:re|fwd?)[ \t]*(?:\[[^\[\]\x00]*\][ \t]*)?:", re.IGNORECASE)
_FWD_TRAILER = "(fwd)"
_FWD_HEADER = "[fwd:"
_WSP = " \t"
# Step (1): tabs and continuations become a space, runs of spaces one space.
_SPACES = re.compile(r"[ \t\r\n]+")


@attrs.frozen
class BaseSubject:
    """``text``: the base subject; ``reply``: whether extracting it removed a
    reply or forward marker (RFC 5256 3, REFERENCES)."""

    text: str
    reply: bool


def base_subject(subject: str | None) -> BaseSubject:
    """
    RFC 5256 2.1 steps (2) to (7) on a subject already decoded from RFC
    2047 (step (1) is done here too: white space squashed).  None, an absent
    Subject, is the empty base subject.
    """
    if not subject:
        return BaseSubject("", False)
    text = _SPACES.sub(" ", subject)
    start, end = 0, len(text)
    reply = False
    while True:
        # (2) subj-trailer = "(fwd)" / WSP, as often as it matches.
        while end > start:
            if text[end - 1] in _WSP:
                end -= 1
            elif end - start >= len(_FWD_TRAILER) and text[end - len(_FWD_TRAILER):end].lower() == _FWD_TRAILER:
                end -= len(_FWD_TRAILER)
                reply = True
            else:
                break
        # (3)-(5) leaders, then blobs that leave a non-empty base.
        start, removed = _strip_leaders(text, start, end)
        reply = reply or removed
        # (6) "[fwd:" ... "]" around the whole: strip and start again at (2).
        if (end - start > len(_FWD_HEADER) and text[start:start + len(_FWD_HEADER)].lower() == _FWD_HEADER
                and text[end - 1] == "]"):
            start += len(_FWD_HEADER)
            end -= 1
            reply = True
            continue
        return BaseSubject(text[start:end], reply)


def _strip_leaders(text: str, start: int, end: int) -> tuple[int, bool]:
    """
    Steps (3) to (5) from ``start``: the new start, and whether a
    subj-refwd went.  A run of blobs is looked at once: either a subj-refwd
    follows it (a subj-leader, step 3), or step (4) removes each blob in
    turn for as long as something is left after it.
    """
    removed = False
    while start < end:
        if text[start] in _WSP:
            start += 1
            continue
        blobs_end, last_blob = start, None
        while (match := _BLOB.match(text, blobs_end, end)) is not None:
            last_blob, blobs_end = blobs_end, match.end()
        leader = _REFWD.match(text, blobs_end, end)
        if leader is not None:
            start = leader.end()
            removed = True
            continue
        if last_blob is not None:
            # (4): the last blob stays when it is all that is left.
            start = blobs_end if blobs_end < end else last_blob
        break
    return start, removed
