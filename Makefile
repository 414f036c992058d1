# The two commands of the README: `make demo` and `make test`. Everything they need is installed here.
SHELL := /bin/bash
PYTHON ?= python3
VENV := $(CURDIR)/.venv
BIN := $(VENV)/bin
COLLECTIONS := $(CURDIR)/build/collections
COLLECTION_LINK := $(COLLECTIONS)/ansible_collections/virtplane/kvm
SANITY_TREE := $(CURDIR)/build/sanity/ansible_collections/virtplane/kvm
GET_PIP := $(HOME)/.ansible/test/cache/get_pip_24_2.py
export ANSIBLE_COLLECTIONS_PATH := $(COLLECTIONS)
export ANSIBLE_CONFIG := $(CURDIR)/ansible.cfg
export PATH := $(BIN):$(PATH)

.PHONY: demo test deps system-deps venv collection pytest pytest-engine-psycopg unit integration lab sanity lint build ee bench clean

demo: deps
	$(BIN)/ansible-playbook -i inventories/lab playbooks/site.yml

test: deps lint pytest pytest-engine-psycopg sanity build

deps: system-deps venv collection

system-deps:
	@tools/install-system-deps

venv: $(VENV)/.installed
$(VENV)/.installed: requirements.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --disable-pip-version-check -r requirements.txt
	touch $@

collection: $(COLLECTION_LINK)
$(COLLECTION_LINK):
	mkdir -p $(dir $@)
	ln -sfn $(CURDIR) $@

# One pytest run over the three folders: one summary line for the whole suite. Two workers: the lab
# tests (one group, one worker: their labs share this machine's two cores) run beside the others.
pytest:
	$(BIN)/pytest -n 2 --dist loadgroup --durations=25 tests/unit tests/integration tests/lab

# The engine role installs Debian 12's psycopg (3.1.7), whose pipeline mode answers a cursor differently from
# the virtualenv's: the engine's paths that use pipeline mode or one-snapshot reads (VM starts, placement)
# run again under it — the tests that start VMs or keep placement snapshots, not the rest of their files.
ENGINE_PSYCOPG := $(CURDIR)/build/psycopg-debian12
ENGINE_PSYCOPG_TESTS := start or fits or cpu_model or removing_a_running or two_hundred or kept or transaction_that \
	or own_reservation
pytest-engine-psycopg: $(ENGINE_PSYCOPG)/.installed
	PYTHONPATH=$(ENGINE_PSYCOPG) $(BIN)/python -c 'import psycopg; assert psycopg.__version__ == "3.1.7", psycopg.__version__'
	PYTHONPATH=$(ENGINE_PSYCOPG) $(BIN)/pytest -n 2 -k "$(ENGINE_PSYCOPG_TESTS)" tests/integration/test_vm.py \
		tests/integration/test_placement_snapshot.py tests/integration/test_concurrency.py

$(ENGINE_PSYCOPG)/.installed:
	$(BIN)/pip install -q --disable-pip-version-check --no-deps --target $(ENGINE_PSYCOPG) psycopg==3.1.7
	touch $@

# ruff; the continuation-line rules ansible-test's pep8 applies, which ruff has not; ansible-lint on
# the roles and playbooks (production profile, .ansible-lint)
lint:
	$(BIN)/ruff check .
	$(BIN)/pycodestyle --select=E1 --max-line-length=120 plugins tests bench tools roles/*/files/*.py
	$(BIN)/ansible-lint

unit:
	$(BIN)/pytest tests/unit

integration:
	$(BIN)/pytest tests/integration

lab:
	$(BIN)/pytest tests/lab

# ansible-test works on a copy placed under ansible_collections/virtplane/kvm, as it requires.
sanity: $(GET_PIP)
	rm -rf $(SANITY_TREE) && mkdir -p $(SANITY_TREE)
	git ls-files -z --cached --others --exclude-standard | rsync -a --from0 --files-from=- ./ $(SANITY_TREE)/
	# its own git repository: ansible-test lists files with git, and build/ is ignored by ours
	cd $(SANITY_TREE) && git init -q && git add -A && \
		$(BIN)/ansible-test sanity --venv --python 3.11 --color no

$(GET_PIP): tools/ansible-test-get-pip.py
	mkdir -p $(dir $@)
	cp $< $@

build:
	mkdir -p build/dist
	$(BIN)/ansible-galaxy collection build --force --output-path build/dist .

# The build context of an execution environment (AWX / AAP) with this collection: ee/execution-environment.yml.
# No container engine runs here; where one does: podman build -f build/ee/Containerfile -t virtplane-ee build/ee
ee: deps build
	cp build/dist/virtplane-kvm-$(shell sed -n 's/^version: //p' galaxy.yml).tar.gz ee/virtplane-kvm.tar.gz
	$(BIN)/ansible-builder create -f ee/execution-environment.yml -c build/ee --output-filename Containerfile

# Figures (JSON) on the lab that `make demo` built.
bench: deps
	$(BIN)/python bench/guest_start.py
	$(BIN)/python bench/apply.py --json
	for hosts in 100 1000 10000; do $(BIN)/python bench/scheduler.py --hosts $$hosts --json || exit 1; done
	$(BIN)/python bench/scheduler.py --hosts 100000 --reference 10 --json
	$(BIN)/python bench/scheduler.py --engine --hosts 1000 --placements 2000 --workers 8 --json
	$(BIN)/python bench/migration.py --json

clean:
	rm -rf build
