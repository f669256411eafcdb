"""Text front end latency: grammar load time and per-sentence p50/p95 of normalize().

    python benchmarks/bench_tn.py            # from the repository root
    python benchmarks/bench_tn.py --repeat 20 --json results.json

Each sentence is timed end to end through normalize() (thread hand-off, splitting, language pick,
rewrites, grammar), "cold" with the grammar's span cache cleared before every call (every number span
pays the grammar) and "warm" with it kept (numbers seen before). Targets: p50 <= 5 ms Chinese,
<= 15 ms English, <= 0.2 ms for sentences with nothing to normalize, <= 10 ms for each of German,
French, Spanish, Italian, Portuguese, Russian, Japanese and Korean (language="Auto": the detector's
time is included; their rules have no grammar, so cold and warm differ only by Python's caches).
Also printed: load time of the grammars and the detector, and resident memory added by each.
Results: docs/normalization.md.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
import tracemalloc
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from normalization import detector, normalize, numwords, tn_worker

# LLM-style sentences, as a chat model streams them one by one.
CORPUS: dict[str, list[str]] = {
    "zh": [
        "好的，会议安排在2025年3月14日下午3:30。",
        "这款手机的售价是5999元，电池容量为5000mAh。",
        "今年的营收增长了12.5%，达到了32亿元。",
        "如有问题请拨打客服电话400-800-8888。",
        "北京今天的最高气温是35℃，最低气温是22℃。",
        "这个模型有700亿个参数，每秒可以生成25个词。",
        "请在3-5个工作日内完成付款。",
        "他在2019年获得了第2名。",
        "我们团队有15个人，其中3个是实习生。",
        "这本书一共有320页，我已经读了一半。",
        "价格从¥99降到了¥79.9。",
        "截至2024年底，用户数突破了1亿。",
        "会议室在3楼的301房间。",
        "第一步，把烤箱预热到180度，然后烤25分钟。",
        "从北京到上海的高铁大约需要4个半小时。",
        "请把文件在周五17:00之前发给我。",
        "这个城市的人口大约是2100万。",
        "每天喝8杯水对身体有好处。",
        "我的手机号是13812345678，有事随时联系。",
        "明天降水概率是80%，记得带伞。",
    ],
    "en": [
        "Sure! The meeting is scheduled for 3:30pm on March 3rd, 2025.",
        "The new model has 70 billion parameters and runs at 25 tokens per second.",
        "Revenue grew 12.5% year over year to $3.2 billion.",
        "You can reach support at 555-123-4567 or email help@example.com.",
        "Python 3.12 is about 5% faster than 3.11 on most benchmarks.",
        "Mix 2 cups of flour with 1/2 cup of sugar and bake at 180°C for 25 minutes.",
        "The Eiffel Tower is 330 meters tall and was completed in 1889.",
        "I recommend upgrading to v2.4.1, which fixes 3 critical bugs.",
        "The flight departs at 14:05 and arrives at 9:40pm local time.",
        "Here are 3 tips to improve your sleep.",
        "The GPU has 24 GB of memory and a 450W power draw.",
        "Between 2020-2023, sales increased by 40%.",
        "The temperature will drop to -5°C tonight.",
        "It ranked 2nd out of 150 entries.",
        "Read chapters 4-6 before Friday.",
        "The battery lasts about 10 hours on a single charge.",
        "Your order total is $47.99 including tax.",
        "The population of Tokyo is roughly 14 million people.",
        "LLMs like GPT-4 can summarize a 300-page book in seconds.",
        "The marathon distance is 42.195 km.",
    ],
    "mixed": [
        "我用iPhone 15 Pro拍了200张照片。",
        "GPT-4的上下文长度是128k。",
        "这个API每分钟最多调用60次。",
        "我们用Python 3.12重写了后端，速度提升了30%。",
        "RTX 4090的显存是24GB。",
        "请访问github.com获取源代码。",
        "我下周去New York出差3天。",
        "这个LLM在MMLU上得了86.4分。",
        "COVID-19疫情从2019年底开始。",
        "新版本v2.1.0修复了12个bug。",
    ],
    "plain": [
        "That's a great question!",
        "Let me explain how transformers work.",
        "I hope this helps you understand the idea.",
        "Feel free to ask if anything is unclear.",
        "当然可以，我来帮你解释一下。",
        "这个问题很有意思，我们一步一步来看。",
        "希望这些信息对你有帮助。",
        "如果还有疑问，随时告诉我。",
    ],
}
# The eight other languages (issue 16): p50 <= 10 ms each after warm-up, language detection included.
CORPUS.update(
    {
        "de": [
            "Das kostet 12,50 € pro Monat.",
            "Am 14.03.2025 beginnt der Kurs um 9:30 Uhr.",
            "Der 3. Platz geht an Anna aus Berlin.",
            "Die Stadt hat 1.234.567 Einwohner.",
            "Die Inflation lag zuletzt bei 2,5 %.",
            "Er lief gestern 5 km in 25 min.",
            "Ruf mich bitte unter +49 30 1234567 an.",
            "Heute Nacht sinkt die Temperatur auf -5 °C.",
            "Ich brauche noch 1 Stunde für den Bericht.",
            "Lies bitte die Seiten 10-20 bis morgen.",
        ],
        "fr": [
            "Ça coûte 12,50 € par mois.",
            "Le 1er mai 2025 est un jour férié.",
            "Le train part à 14h30 de la gare de Lyon.",
            "La ville compte 1 234 567 habitants.",
            "Elle a fini 2e de la course.",
            "Appelez-nous au 06 12 34 56 78.",
            "Les prix ont augmenté de 15 % cette année.",
            "Il fait 21 °C à Marseille aujourd'hui.",
            "La Bastille est tombée le 14/07/1789.",
            "Il reste encore 3,5 litres de lait.",
        ],
        "es": [
            "El billete cuesta 21 € por persona.",
            "El 1.º de mayo es festivo en España.",
            "La reunión es a las 14:30 en la oficina.",
            "Hay 1.234 personas en la lista de espera.",
            "Vive en la 2.ª planta del edificio.",
            "Llegó a Madrid el 14/03/2025.",
            "El IVA general es del 21 %.",
            "Llámame al +34 612 345 678 cuando puedas.",
            "Mañana hará -3 °C por la noche.",
            "El maratón tiene 42,195 km.",
        ],
        "it": [
            "Il biglietto costa 1,50 € a corsa.",
            "Il 1° maggio è la festa dei lavoratori.",
            "Ci vediamo alle 14:30 davanti al museo.",
            "È arrivato 2° nella classifica generale.",
            "Alla partita c'erano 3.000 persone.",
            "Il 25/12/2025 è Natale.",
            "Lo sconto è del 30 % su tutti i prodotti.",
            "Fuori ci sono 18 °C e c'è il sole.",
            "Ho corso 10 km questa mattina.",
            "La valigia pesa 2,5 kg in più.",
        ],
        "pt": [
            "O bilhete custa 2 € por pessoa.",
            "Ele ficou em 1º lugar na corrida.",
            "A reunião é às 14h30 na sala grande.",
            "A cidade tem 1.234.567 habitantes.",
            "Chegou a Lisboa em 14/03/2025.",
            "A taxa de juro é de 5,5 % ao ano.",
            "Hoje estão 30 °C no Porto.",
            "Ligue para +351 912 345 678 a qualquer hora.",
            "Comprei 3 kg de arroz no mercado.",
            "O jogo começa às 20:00 no estádio.",
        ],
        "ru": [
            "Это стоит 5 рублей за штуку.",
            "В 2025 году всё изменится.",
            "Встреча назначена на 14.03.2025.",
            "Поезд отправляется в 14:30.",
            "На концерт пришло около 500 человек.",
            "Он занял 2-е место в конкурсе.",
            "Скидка на всё составляет 15 %.",
            "Мы прошли 5 км за 2 ч.",
            "Население города 1 234 567 человек.",
            "Сегодня ночью будет -5 °C.",
        ],
        "ja": [
            "会議は2025年3月14日です。",
            "14:30に始まります。",
            "価格は¥1,200です。",
            "3人で行きます。",
            "電話番号は090-1234-5678です。",
            "明日の気温は-5℃です。",
            "今日は全品15%引きです。",
            "容量は256GBです。",
            "1,000,000人が来ました。",
            "5km走りました。",
        ],
        "ko": [
            "사과 3개 주세요.",
            "14:30에 만나요.",
            "2025년 3월 14일입니다.",
            "가격은 5,000원입니다.",
            "전화번호는 010-1234-5678입니다.",
            "학생 25명이 왔어요.",
            "15% 할인합니다.",
            "기온은 -5℃입니다.",
            "회의는 2025.03.14에 있어요.",
            "2시간 걸려요.",
        ],
    }
)
TARGETS_MS = {"zh": 5.0, "en": 15.0, "mixed": 5.0, "plain": 0.2} | dict.fromkeys(
    ("de", "fr", "es", "it", "pt", "ru", "ja", "ko"), 10.0
)
_NAMES = {
    "de": "German",
    "fr": "French",
    "es": "Spanish",
    "it": "Italian",
    "pt": "Portuguese",
    "ru": "Russian",
    "ja": "Japanese",
    "ko": "Korean",
}


def _rss_mib() -> float:
    with open("/proc/self/statm", encoding="ascii") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def _first_use_mib() -> dict[str, float]:
    """Memory added by the first use of each language: its imports (num2words comes with the first
    language), compiled patterns and caches, as Python heap (tracemalloc: finer than RSS pages)."""
    added = {}
    tracemalloc.start()
    try:
        for name, language in _NAMES.items():
            before = tracemalloc.get_traced_memory()[0]
            for sentence in CORPUS[name]:
                normalize(sentence, language)
            added[name] = (tracemalloc.get_traced_memory()[0] - before) / 2**20
    finally:
        tracemalloc.stop()
    return added


def _percentile(samples: list[float], q: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def _time_one(sentence: str, cold: bool) -> float:
    if cold:
        tn_worker.run_grammar.cache_clear()
        numwords.cardinal.cache_clear()  # the other languages' number words are cached too
        numwords.ordinal.cache_clear()
    started = time.perf_counter()
    normalize(sentence)
    return (time.perf_counter() - started) * 1000


def _machine() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            cpu = next((line.split(":", 1)[1].strip() for line in f if line.startswith("model name")), cpu)
    except OSError:
        pass
    return f"{os.cpu_count()} CPU cores ({cpu}), Python {platform.python_version()}, {platform.system()}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeat", type=int, default=10, help="timed calls per sentence and mode")
    parser.add_argument("--json", type=Path, help="also write the results here")
    args = parser.parse_args()

    rss_start = _rss_mib()
    load = {lang: tn_worker.load_grammar(lang) for lang in tn_worker.GRAMMAR_LANGUAGES}
    rss_grammars = _rss_mib()
    load["detector"] = tn_worker.submit(detector.warm).result()
    memory = {"zh+en grammars": rss_grammars - rss_start, "detector": _rss_mib() - rss_grammars}
    memory.update(_first_use_mib())
    for sentences in CORPUS.values():  # one untimed pass: imports, regex compilation, thread start
        for sentence in sentences:
            normalize(sentence)

    results: dict[str, dict[str, float]] = {}
    for name, sentences in CORPUS.items():
        row: dict[str, float] = {"sentences": len(sentences)}
        for mode in ("cold", "warm"):
            if mode == "warm":
                for sentence in sentences:  # fill the span cache the cold runs kept clearing
                    normalize(sentence)
            samples = [_time_one(s, mode == "cold") for _ in range(args.repeat) for s in sentences]
            row[f"{mode}_p50_ms"] = statistics.median(samples)
            row[f"{mode}_p95_ms"] = _percentile(samples, 0.95)
        results[name] = row

    print(f"machine: {_machine()}")
    print(
        f"grammar load: Chinese {load['Chinese']:.2f} s, English {load['English']:.2f} s; "
        f"language detector {load['detector']:.2f} s"
    )
    print("memory added (MiB; RSS for grammars and detector, Python heap per language):")
    print("  " + ", ".join(f"{k} {v:.2f}" for k, v in memory.items()))
    print(f"{'set':6} {'n':>3} {'cold p50':>9} {'cold p95':>9} {'warm p50':>9} {'warm p95':>9} {'target p50':>10}")
    for name, row in results.items():
        print(
            f"{name:6} {row['sentences']:>3.0f} {row['cold_p50_ms']:>7.2f}ms {row['cold_p95_ms']:>7.2f}ms "
            f"{row['warm_p50_ms']:>7.2f}ms {row['warm_p95_ms']:>7.2f}ms {TARGETS_MS[name]:>8.1f}ms"
        )
    if args.json:
        payload = {"machine": _machine(), "grammar_load_s": load, "memory_mib": memory, "per_sentence": results}
        args.json.write_text(json.dumps(payload, indent=2), encoding="utf-8")


if __name__ == "__main__":
    main()
