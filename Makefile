# The two commands a new user needs (see README.md):
#   make studio   set up .venv and open DBA Studio on the embedded default model
#   make test     set up .venv and run the test suite
.PHONY: setup studio test
setup:
	@bash scripts/setup.sh
studio: setup
	.venv/bin/python app.py
test: setup
	.venv/bin/python -m pytest
