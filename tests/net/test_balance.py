"""
The node's table of connection counts (gateway/net/balance.py): one slot
per serving process in shared memory, each written by its own process.
"""

from __future__ import annotations

import os

import pytest

from gateway.net.balance import ABSENT, Loads


@pytest.fixture
def table():
    main = Loads.create(3)
    # What a worker maps from the descriptor it was handed.
    views = [main, *(Loads(os.dup(main.fileno()), 3, index) for index in (1, 2))]
    yield views
    for view in views:
        os.close(view.fileno())


def test_a_new_table_has_the_main_process_serving_and_no_worker_yet(table):
    main, first, second = table
    assert main.others() == (ABSENT, ABSENT)
    assert first.others() == (0, ABSENT)
    assert not main.lighter_elsewhere()


def test_what_one_process_writes_every_other_reads_at_once(table):
    main, first, second = table
    first.serving()
    second.serving()
    first.add(1)
    first.add(1)
    second.add(3)
    second.add(-1)
    assert main.others() == (2, 2)
    assert first.others() == (0, 2)
    assert second.others() == (0, 2)


def test_lighter_elsewhere_only_when_a_serving_process_holds_fewer(table):
    main, first, second = table
    first.serving()
    main.add(2)
    first.add(2)
    assert not main.lighter_elsewhere()
    main.add(1)
    assert main.lighter_elsewhere()
    assert not first.lighter_elsewhere()
    # A worker not started yet never draws connections its way.
    assert main.others()[1] == ABSENT


def test_a_worker_gone_draws_no_connection_until_it_serves_again(table):
    main, first, second = table
    first.serving()
    main.add(1)
    assert main.lighter_elsewhere()
    main.gone(1)
    assert not main.lighter_elsewhere()
    # Its new process starts from nothing: the old one's count went with it.
    first.serving()
    assert first.others() == (1, ABSENT)
    assert main.lighter_elsewhere()
