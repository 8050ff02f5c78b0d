"""
How a SEARCH answers (``* SEARCH``, or ESEARCH of RFC 4731 when the client
asks with RETURN or has enabled IMAP4rev2) and SEARCHRES's saved result
(RFC 5182): ``$`` in a sequence set or a search key.

A mixin of ``gateway.imap.server.IMAPServer``; the pure parts are
``gateway.imap.esearch``.
"""

from __future__ import annotations

from collections.abc import Callable

from gateway.imap.errors import bad
from gateway.imap.esearch import SAVED, SearchReturn, SearchReturnError, esearch_response, parse_search_return, saved_numbers
from gateway.imap.responses import Data, Search
from gateway.imap.sequence import SequenceSet, SequenceSetError, parse_sequence_set

# RFC 5182 2.1: empty until a SEARCH saves, and again on SELECT, EXAMINE,
# CLOSE and UNSELECT.
NOTHING_SAVED = SequenceSet(())


def uid_set(uids: list[int]) -> SequenceSet:
    """Ascending UIDs as a SequenceSet of their runs (however many: no client text to bound)."""
    runs: list[list[int]] = []
    for uid in uids:
        if runs and uid == runs[-1][1] + 1:
            runs[-1][1] = uid
        else:
            runs.append([uid, uid])
    return SequenceSet(tuple((first, last) for first, last in runs))


def search_return(server, line):
    """SEARCH's optional ``RETURN (options)`` before its charset (RFC 4466 2.6)."""
    try:
        return parse_search_return(line or b"")
    except SearchReturnError:
        raise bad(b"Invalid SEARCH result options") from None


class SearchResults:
    # The UIDs ``$`` names; a class default, so an idle session holds none.
    saved_uids: SequenceSet = NOTHING_SAVED
    # RFC 9051: enabled by ENABLE IMAP4rev2.
    imap4rev2 = False

    def forget_saved(self) -> None:
        # Back to the class default.
        self.__dict__.pop("saved_uids", None)

    def sequence_set(self, text: bytes) -> SequenceSet:
        """A command's sequence set, ``$`` (as UIDs) included; BAD if malformed."""
        if text == SAVED:
            return self.saved_uids
        try:
            return parse_sequence_set(text)
        except SequenceSetError:
            raise bad(b"Invalid sequence set") from None

    def saved_ranges(self) -> list[tuple[int, int]]:
        """The messages ``$`` names in the client's view (``SelectedView.index_ranges``)."""
        return self.view.index_ranges(self.saved_uids, by_uid=True)

    def search_return_for(self, returns: SearchReturn | None) -> SearchReturn | None:
        """
        The result options a SEARCH answers by: the client's, or under
        IMAP4rev2 ALL (RFC 9051 6.4.4: every SEARCH answers ESEARCH);
        None for the IMAP4rev1 ``* SEARCH``.
        """
        if returns is None and self.imap4rev2:
            return SearchReturn()
        return returns

    async def answer_search(self, tag: bytes, returns: SearchReturn | None, by_uid: bool,
                            numbers: list[int], highest: int | None) -> None:
        """
        Send what a SEARCH found (``numbers`` ascending: UIDs with ``by_uid``,
        else sequence numbers) and save it for ``$`` if asked.  ``highest``
        is the largest MODSEQ among them when the search used MODSEQ
        (RFC 7162 3.1.6), else None.
        """
        view = self.view
        if returns is None:
            self.send(Search(numbers, highest if numbers else None))
            return
        if returns.saves:
            kept = saved_numbers(returns, numbers)
            uids = kept if by_uid else [view.uid_of(seq) for seq in kept]
            if uids:
                self.saved_uids = uid_set(uids)
        if not returns.answers:
            return
        modseq_of = None
        if highest is not None:
            modseq_of = await self._returned_modseqs(returns, by_uid, numbers, highest)
        self.send(Data(esearch_response(tag, by_uid, returns, numbers, modseq_of)))

    async def _returned_modseqs(self, returns, by_uid, numbers, highest) -> Callable[[int], int]:
        """
        RFC 4731 3.2: the MODSEQ of the messages MIN and MAX return when
        they are all that is returned; of all found otherwise, whose
        highest the search already knows.
        """
        options = returns.options
        if not numbers or options & {"ALL", "COUNT"} or not options & {"MIN", "MAX"}:
            return lambda number: highest
        view = self.view
        returned = {numbers[0], numbers[-1]}
        by_number = {number: (number if by_uid else view.uid_of(number)) for number in returned}
        records = {r.uid: r.modseq for r in await self.store.get_records(view.mailbox_id, list(by_number.values()))}
        return lambda number: records.get(by_number[number], highest)
