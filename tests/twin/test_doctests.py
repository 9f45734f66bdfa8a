"""The runnable examples in the twin's docstrings (STYLE.md 16-17: a broken example is a
failing test). The sampler's and the posterior's examples fit twins and are exercised by
tests/twin/test_patient_twin.py instead."""

import doctest

import pytest

from twinsim.twin import _clinical, _genotype, _recommend
from twinsim.twin._latent import _synthetic


@pytest.mark.parametrize(
    "module", [_clinical, _genotype, _recommend, _synthetic], ids=lambda m: m.__name__
)
def test_docstring_examples_run(module) -> None:
    result = doctest.testmod(module, optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    assert result.failed == 0
