"""The write faces' fixtures (tests/faces.py) for the rule tests of this folder."""

from tests.faces import board as board
from tests.faces import staff as staff
