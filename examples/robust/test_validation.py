"""Input validation: pure functions, no database."""

import pytest
from app import services


@pytest.mark.parametrize("email", ["ana@example.com", " Bob@Example.ORG "])
def test_valid_email_is_normalised(email):
    assert services.validate_email(email) == email.strip().lower()


@pytest.mark.parametrize("email", ["ana", "ana@", "@example.com", "a b@example.com"])
def test_invalid_email_is_rejected(email):
    with pytest.raises(ValueError):
        services.validate_email(email)
