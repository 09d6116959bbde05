"""Who may answer a kernel's input(): the person who ran the cell, nobody else."""

from __future__ import annotations

import pytest

from notebooks.access import Refused, check_may_answer_input


def test_it_lets_the_person_who_ran_the_cell_answer():
    check_may_answer_input("u:1", "u:1")


@pytest.mark.parametrize(("who", "asked"), [("u:2", "u:1"), ("g:guest", "u:1"), ("", ""), ("", "u:1")])
def test_it_refuses_everyone_else_with_a_code(who, asked):
    with pytest.raises(Refused) as refused:
        check_may_answer_input(who, asked)
    assert refused.value.code == "not_the_runner"
