"""Benchmark folders: the public MMLU / C-Eval / CMMLU layouts, the bundled demo benchmark, and precise errors."""

import json
from pathlib import Path

import pytest

from tunesmith.errors import ConfigError, DataError
from tunesmith.evaluate.benchmark import available_tasks, load_benchmark, parse_task, read_questions

DEMO = Path(__file__).resolve().parents[2] / "src" / "tunesmith" / "evaluate" / "demo_benchmark"
ROW = "What is 1 + 1?,1,2,3,4,B\n"


def make_benchmark(root: Path, name: str, files: dict[str, str], subjects=("algebra",)) -> Path:
    folder = root / name
    folder.mkdir(parents=True)
    mapping = {s: {"name": s.replace("_", " "), "category": "STEM"} for s in subjects}
    (folder / "mapping.json").write_text(json.dumps(mapping))
    for relative, text in files.items():
        path = folder / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
    return folder


def test_parse_task_splits_on_the_last_underscore():
    assert parse_task("mmlu_test") == ("mmlu", "test")
    assert parse_task("demo_en_test") == ("demo_en", "test")
    with pytest.raises(ConfigError, match="<benchmark>_<split>"):
        parse_task("mmlu")


def test_the_demo_benchmarks_have_three_subjects_of_eight_questions():
    for name, lang_hint in (("demo_en", "What"), ("demo_zh", "？")):
        bench = load_benchmark(DEMO, f"{name}_test", n_shot=5)
        assert [s.key for s in bench.subjects] == ["basic_arithmetic", "world_geography", "literature_and_arts"]
        assert [len(s.questions) for s in bench.subjects] == [8, 8, 8]
        assert [len(s.dev) for s in bench.subjects] == [5, 5, 5]
        assert any(lang_hint in q.question for q in bench.subjects[0].questions)
        answers = [q.answer for s in bench.subjects for q in s.questions]
        assert {letter: answers.count(letter) for letter in "ABCD"} == {"A": 6, "B": 8, "C": 6, "D": 4}
    zh = load_benchmark(DEMO, "demo_zh_test", n_shot=0)
    assert zh.subjects[0].name == "基础算术" and zh.subjects[0].questions[2].id == "2"
    assert zh.subjects[0].dev == []  # n_shot 0 reads no dev file
    assert available_tasks(DEMO) == ["demo_en_dev", "demo_en_test", "demo_zh_dev", "demo_zh_test"]


def test_public_layouts_are_read(tmp_path):
    # MMLU: data/<split>/<subject>_<split>.csv without a header; "validation" reads the val files
    make_benchmark(tmp_path, "mmlu", {"data/val/algebra_val.csv": ROW, "data/dev/algebra_dev.csv": ROW})
    bench = load_benchmark(tmp_path, "mmlu_validation", n_shot=1)
    question = bench.subjects[0].questions[0]
    assert (question.question, question.choices["B"], question.answer, question.id) == ("What is 1 + 1?", "2", "B", "0")
    # C-Eval: <split>/<subject>_<split>.csv with header id,question,A,B,C,D,answer
    make_benchmark(tmp_path, "ceval", {"val/algebra_val.csv": "id,question,A,B,C,D,answer\n7,Q?,a,b,c,d,D\n"})
    question = load_benchmark(tmp_path, "ceval_validation", n_shot=0).subjects[0].questions[0]
    assert (question.id, question.question, question.answer) == ("7", "Q?", "D")
    # CMMLU: <split>/<subject>.csv with an unnamed index column and capitalised names
    make_benchmark(tmp_path, "cmmlu", {"test/algebra.csv": ",Question,A,B,C,D,Answer\n0,Q?,a,b,c,d,C\n",
                                       "dev/algebra.csv": ",Question,A,B,C,D,Answer\n0,S?,a,b,c,d,A\n"})
    bench = load_benchmark(tmp_path, "cmmlu_test", n_shot=5)
    assert bench.subjects[0].questions[0].answer == "C" and bench.subjects[0].dev[0].question == "S?"
    # flat: everything in the benchmark folder; 7 columns without a header = an id first
    make_benchmark(tmp_path, "flat", {"algebra_test.csv": "q1,What?,w,x,y,z,A\n"})
    question = load_benchmark(tmp_path, "flat_test", n_shot=0).subjects[0].questions[0]
    assert (question.id, question.question) == ("q1", "What?")


def test_quoted_multiline_questions_keep_their_line_numbers(tmp_path):
    path = tmp_path / "x_test.csv"
    path.write_text('"line one\nline two",a,b,c,d,A\nQ2,a,b,c,d,E\n')
    with pytest.raises(DataError, match=r"x_test.csv:3: answer 'E' is not one of A, B, C, D"):
        read_questions(path)


def test_missing_task_folder_lists_the_available_tasks(tmp_path):
    make_benchmark(tmp_path, "mine", {"test/algebra_test.csv": ROW})
    with pytest.raises(ConfigError) as info:
        load_benchmark(tmp_path, "mmlu_test", n_shot=0)
    assert str(tmp_path / "mmlu") in str(info.value) and "mine_test" in str(info.value)
    with pytest.raises(ConfigError, match="that folder is missing"):
        load_benchmark(tmp_path / "nowhere", "mmlu_test", n_shot=0)


def test_missing_split_names_the_paths_and_the_splits(tmp_path):
    make_benchmark(tmp_path, "mine", {"test/algebra_test.csv": ROW, "dev/algebra_dev.csv": ROW})
    with pytest.raises(DataError) as info:
        load_benchmark(tmp_path, "mine_validation", n_shot=0)
    message = str(info.value)
    assert "split 'validation' of subject 'algebra' not found" in message
    assert str(tmp_path / "mine" / "val" / "algebra_val.csv") in message and "splits available: dev, test" in message


def test_missing_dev_split_says_how_to_skip_few_shot(tmp_path):
    make_benchmark(tmp_path, "mine", {"test/algebra_test.csv": ROW})
    with pytest.raises(DataError, match="n_shot=0"):
        load_benchmark(tmp_path, "mine_test", n_shot=2)
    assert len(load_benchmark(tmp_path, "mine_test", n_shot=0).subjects[0].questions) == 1


def test_a_subject_missing_from_one_split_is_named(tmp_path):
    make_benchmark(tmp_path, "mine", {"test/algebra_test.csv": ROW}, subjects=("algebra", "biology"))
    with pytest.raises(DataError, match="subject 'biology' not found"):
        load_benchmark(tmp_path, "mine_test", n_shot=0)


def test_malformed_row_names_file_and_line(tmp_path):
    make_benchmark(tmp_path, "mine", {"test/algebra_test.csv": ROW + "\nWhat?,1,2,3\n"})
    with pytest.raises(DataError, match=r"algebra_test.csv:3: expected 6 columns .* got 4"):
        load_benchmark(tmp_path, "mine_test", n_shot=0)
    make_benchmark(tmp_path, "head", {"test/algebra_test.csv": "id,question,A,B,C,D,answer\n1,Q,a,b,c,d,A\n2,Q,a,b\n"})
    with pytest.raises(DataError, match=r"algebra_test.csv:3: expected 7 columns as the header has, got 4"):
        load_benchmark(tmp_path, "head_test", n_shot=0)


def test_answer_outside_a_to_d_names_file_line_and_value(tmp_path):
    make_benchmark(tmp_path, "mine", {"test/algebra_test.csv": ROW + ROW.replace(",B", ",E")})
    with pytest.raises(DataError, match=r"algebra_test.csv:2: answer 'E' is not one of A, B, C, D"):
        load_benchmark(tmp_path, "mine_test", n_shot=0)


def test_header_without_answers_points_at_validation(tmp_path):
    make_benchmark(tmp_path, "ceval", {"test/algebra_test.csv": "id,question,A,B,C,D\n0,Q,a,b,c,d\n"})
    with pytest.raises(DataError, match="lacks column.* answer.*validation split"):
        load_benchmark(tmp_path, "ceval_test", n_shot=0)


def test_bad_mapping_is_named(tmp_path):
    folder = make_benchmark(tmp_path, "mine", {"test/algebra_test.csv": ROW})
    (folder / "mapping.json").write_text('{"algebra": {"name": "algebra"}}')
    with pytest.raises(DataError, match="mapping.json: subject 'algebra' needs"):
        load_benchmark(tmp_path, "mine_test", n_shot=0)
