"""The CLI's parsing in this process (benchmarks/cli.py ``build_parser``): a bad value is
refused by the parser itself, naming its option, before any command runs; good values arrive
typed. tests/test_cli.py and tests/test_commands.py check the same front door end to end, in
a subprocess, with what each command then does."""
import pytest

from benchmarks.cli import build_parser


@pytest.mark.parametrize("args, said", [
    (["run", "--batch-size", "0"], "argument --batch-size: must be a positive integer, got '0'"),
    (["run", "--lr", "-0.5"], "argument --lr: must be a positive number"),
    (["run", "--epochs", "two"], "argument --epochs: must be an integer from 1 to 1000, got 'two'"),
    (["run", "--momentum", "1.5"], "argument --momentum: must be a number in [0, 1)"),
    (["run", "--dtype", "float16"], "argument --dtype: invalid choice: 'float16'"),
    (["run", "--seed=-1"], "argument --seed: must be an integer in [0, 2**32)"),
    (["run", "--impl", "numpy-fast"], "unknown implementation 'numpy-fast'; valid names: numpy-sample"),
    (["run", "--output-json", "/nonexistent-folder/x.json"], "argument --output-json: "),
    (["run", "--tracking-uri", "sqlite:///x.db"], "unrecognized arguments: --tracking-uri"),
    (["run", "--world-size", "0"], "argument --world-size: must be a positive integer, got '0'"),
    (["bench", "--batch-sizes", "0,-5"], "argument --batch-sizes: must be a positive integer, got '0'"),
    (["bench", "--seeds=-1"], "argument --seeds: must be an integer in [0, 2**32)"),
    (["bench", "--cell-budget", "-1"], "argument --cell-budget: must be a positive number"),
    (["bench", "--threads", "0"], "argument --threads: must be an integer from 1 to"),
    # upper bounds: a typo or an attack on the machine, refused before anything runs
    (["bench", "--threads", "100000"], "argument --threads: must be an integer from 1 to"),
    (["bench", "--epochs", "1000000"], "argument --epochs: must be an integer from 1 to 1000"),
    (["run", "--epochs", "1001"], "argument --epochs: must be an integer from 1 to 1000"),
    (["bench", "--repeats", "100000"], "argument --repeats: must be an integer from 1 to 1000"),
    (["bench", "--repeat-seconds", "1e308"], "argument --repeat-seconds: must be a positive number of seconds, at most 60"),
    (["bench", "--repeat-seconds", "nan"], "argument --repeat-seconds: must be a positive number"),
    (["bench", "--cell-budget", "inf"], "argument --cell-budget: must be a positive number of seconds"),
    (["report", "--output-dir", "x" * 300], "argument --output-dir: 'xxxx"),
    (["run", "--output-json", "/tmp/" + "y" * 300], "argument --output-json: "),
    (["report", "--output-dir", __file__], "argument --output-dir: "),
    (["compare", "latest"], "the following arguments are required: B"),
    (["server", "--port", "0"], "argument --port: must be a port number in [1, 65535], got '0'"),
    (["server", "--workers", "0"], "argument --workers: must be a positive integer, got '0'"),
    (["server", "--auth-cache-seconds", "-1"], "argument --auth-cache-seconds: must be a non-negative integer"),
    (["pg", "status", "--pg-port", "65536"], "argument --pg-port: must be a port number in [1, 65535]"),
    (["ui", "--port", "70000"], "argument --port: must be a port number in [1, 65535]"),
])
def test_a_bad_value_is_refused_by_the_parser_naming_its_option(args, said, capsys):
    with pytest.raises(SystemExit) as refused:
        build_parser().parse_args(args)
    assert refused.value.code == 2
    error = capsys.readouterr().err.strip().splitlines()[-1]
    assert f"python -m benchmarks {args[0]}: error: " in error or "python -m benchmarks: error: " in error
    assert said in error, error


def test_good_values_arrive_typed_and_each_command_has_its_handler():
    parse = build_parser().parse_args
    bench = parse(["bench", "--batch-sizes", "1,32", "--seeds", "0,1", "--threads", "1"])
    assert (bench.batch_sizes, bench.seeds, bench.threads) == ((1, 32), (0, 1), 1)
    assert parse(["bench"]).threads is None                   # the thread-default policy decides
    run = parse(["run", "--impl", "numpy-batch,numba-batch", "--lr", "0.1", "--dtype", "float32"])
    assert (run.impl, run.lr, run.dtype) == (["numpy-batch", "numba-batch"], 0.1, "float32")
    handlers = {args[0]: parse(args).func for args in (["run"], ["bench"], ["report"], ["regress"], ["history"],
                                                      ["look"], ["compare", "latest~1", "latest"], ["server"],
                                                      ["pg", "status"], ["store", "check"])}
    assert len(set(handlers.values())) == len(handlers)        # one handler per command
