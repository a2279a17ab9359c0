# The two commands a new user needs (see README.md):
#   make studio   set up .venv and open DBA Studio on the embedded default model
#   make test     set up .venv (with the test and notebook tools) and run the test suite
# and one for the tutorials:
#   make notebooks   set up .venv (with JupyterLab) and open the notebooks
.PHONY: setup setup-dev studio test notebooks
setup:
	@bash scripts/setup.sh
setup-dev:
	@bash scripts/setup.sh dev
studio: setup
	.venv/bin/python app.py
test: setup-dev
	.venv/bin/python -m pytest
notebooks: setup-dev
	.venv/bin/jupyter lab notebooks/
