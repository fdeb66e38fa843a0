"""Optional dependencies fail with one line that names what needs them and the install command."""

import pytest

from unetkit.errors import UnetkitError
from unetkit.extras import optional


def test_an_installed_module_is_returned():
    import json

    assert optional("json", "never shown", "none") is json


def test_a_missing_module_names_the_need_and_the_extra():
    with pytest.raises(UnetkitError, match=r"^--log wandb needs W&B: pip install 'unetkit\[wandb\]'$"):
        optional("unetkit_no_such_module", "--log wandb needs W&B", "wandb")
