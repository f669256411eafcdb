"""Words and written conventions of German, French, Spanish, Italian, Portuguese and Russian.

Data only; the rules that use it are in european.py. A noun is written "one | few | many | gender":
the forms after 1, after 2-4 and after 5+ (Russian agreement; the other languages have one plural and
repeat it), and m/f/n for the number before it (German "eine Stunde", Spanish "doscientas libras").
"""

from __future__ import annotations

from typing import NamedTuple


class Noun(NamedTuple):
    one: str
    few: str
    many: str
    gender: str


def _noun(spec: str) -> Noun:
    parts = [p.strip() for p in spec.split("|")]
    if len(parts) == 3:  # one | plural | gender
        parts = [parts[0], parts[1], parts[1], parts[2]]
    return Noun(*parts)


def _table(text: str) -> dict[str, Noun]:
    table = {}
    for line in text.strip().splitlines():
        keys, spec = line.split(":", 1)
        for key in keys.split():
            table[key] = _noun(spec)
    return table


EUROPEAN = ("German", "French", "Spanish", "Italian", "Portuguese", "Russian")

# Decimal comma everywhere. Thousands: a dot in German, Spanish, Italian and Portuguese ("1.234.567"),
# a space, no-break space or narrow no-break space in French and Russian ("1 234 567").
THOUSANDS_DOT = frozenset({"German", "Spanish", "Italian", "Portuguese"})

DECIMAL_WORD = {
    "German": "Komma",
    "French": "virgule",
    "Spanish": "coma",
    "Italian": "virgola",
    "Portuguese": "vírgula",
    "Russian": "запятая",
}
PERCENT = {
    "German": _noun("Prozent | Prozent | n"),
    "French": _noun("pour cent | pour cent | m"),
    "Spanish": _noun("por ciento | por ciento | m"),
    "Italian": _noun("per cento | per cento | m"),
    "Portuguese": _noun("por cento | por cento | m"),
    "Russian": _noun("процент | процента | процентов | m"),
}
RANGE_WORD = {"German": "bis", "French": "à", "Spanish": "a", "Italian": "a", "Portuguese": "a"}
PLUS = {"German": "plus", "French": "plus", "Spanish": "más", "Italian": "più", "Portuguese": "mais", "Russian": "плюс"}

# Currencies: symbol or code -> (main unit, hundredth).
_CURRENCY_SPECS = {
    "German": """
        € EUR: Euro | Euro | m ; Cent | Cent | m
        $ USD: Dollar | Dollar | m ; Cent | Cent | m
        £ GBP: Pfund | Pfund | n ; Penny | Pence | m
        ₽ RUB: Rubel | Rubel | m ; Kopeke | Kopeken | f""",
    "French": """
        € EUR: euro | euros | m ; centime | centimes | m
        $ USD: dollar | dollars | m ; cent | cents | m
        £ GBP: livre | livres | f ; penny | pence | m
        ₽ RUB: rouble | roubles | m ; kopeck | kopecks | m""",
    "Spanish": """
        € EUR: euro | euros | m ; céntimo | céntimos | m
        $ USD: dólar | dólares | m ; centavo | centavos | m
        £ GBP: libra | libras | f ; penique | peniques | m
        ₽ RUB: rublo | rublos | m ; kopek | kopeks | m""",
    "Italian": """
        € EUR: euro | euro | m ; centesimo | centesimi | m
        $ USD: dollaro | dollari | m ; centesimo | centesimi | m
        £ GBP: sterlina | sterline | f ; penny | penny | m
        ₽ RUB: rublo | rubli | m ; copeco | copechi | m""",
    "Portuguese": """
        € EUR: euro | euros | m ; cêntimo | cêntimos | m
        $ USD: dólar | dólares | m ; centavo | centavos | m
        £ GBP: libra | libras | f ; pêni | pence | m
        ₽ RUB: rublo | rublos | m ; copeque | copeques | m""",
    "Russian": """
        € EUR: евро | евро | евро | n ; цент | цента | центов | m
        $ USD: доллар | доллара | долларов | m ; цент | цента | центов | m
        £ GBP: фунт | фунта | фунтов | m ; пенни | пенни | пенни | n
        ₽ RUB руб руб. р.: рубль | рубля | рублей | m ; копейка | копейки | копеек | f""",
}


def _currencies(text: str) -> dict[str, tuple[Noun, Noun]]:
    table = {}
    for line in text.strip().splitlines():
        keys, spec = line.split(":", 1)
        main, cents = spec.split(";")
        for key in keys.split():
            table[key] = (_noun(main), _noun(cents))
    return table


CURRENCIES = {lang: _currencies(spec) for lang, spec in _CURRENCY_SPECS.items()}

# Unit symbols written after a number. Russian text uses both Cyrillic and Latin symbols.
_UNIT_SPECS = {
    "German": """
        km: Kilometer | Kilometer | m
        m: Meter | Meter | m
        cm: Zentimeter | Zentimeter | m
        mm: Millimeter | Millimeter | m
        kg: Kilogramm | Kilogramm | n
        g: Gramm | Gramm | n
        mg: Milligramm | Milligramm | n
        l: Liter | Liter | m
        ml: Milliliter | Milliliter | m
        km/h: Kilometer pro Stunde | Kilometer pro Stunde | m
        h Std.: Stunde | Stunden | f
        min: Minute | Minuten | f
        s Sek.: Sekunde | Sekunden | f
        °C: Grad Celsius | Grad Celsius | n
        °F: Grad Fahrenheit | Grad Fahrenheit | n
        GB: Gigabyte | Gigabyte | n
        MB: Megabyte | Megabyte | n
        TB: Terabyte | Terabyte | n
        kW: Kilowatt | Kilowatt | n
        W: Watt | Watt | n
        kWh: Kilowattstunde | Kilowattstunden | f
        mAh: Milliamperestunde | Milliamperestunden | f
        Mio.: Million | Millionen | f
        Mrd.: Milliarde | Milliarden | f""",
    "French": """
        km: kilomètre | kilomètres | m
        m: mètre | mètres | m
        cm: centimètre | centimètres | m
        mm: millimètre | millimètres | m
        kg: kilogramme | kilogrammes | m
        g: gramme | grammes | m
        mg: milligramme | milligrammes | m
        l L: litre | litres | m
        ml mL: millilitre | millilitres | m
        km/h: kilomètre par heure | kilomètres par heure | m
        min: minute | minutes | f
        s: seconde | secondes | f
        °C: degré Celsius | degrés Celsius | m
        °F: degré Fahrenheit | degrés Fahrenheit | m
        Go GB: gigaoctet | gigaoctets | m
        Mo MB: mégaoctet | mégaoctets | m
        To TB: téraoctet | téraoctets | m
        kW: kilowatt | kilowatts | m
        W: watt | watts | m
        kWh: kilowattheure | kilowattheures | m
        mAh: milliampère-heure | milliampères-heures | m""",
    "Spanish": """
        km: kilómetro | kilómetros | m
        m: metro | metros | m
        cm: centímetro | centímetros | m
        mm: milímetro | milímetros | m
        kg: kilo | kilos | m
        g: gramo | gramos | m
        mg: miligramo | miligramos | m
        l L: litro | litros | m
        ml mL: mililitro | mililitros | m
        km/h: kilómetro por hora | kilómetros por hora | m
        h: hora | horas | f
        min: minuto | minutos | m
        s: segundo | segundos | m
        °C: grado centígrado | grados centígrados | m
        °F: grado Fahrenheit | grados Fahrenheit | m
        GB: gigabyte | gigabytes | m
        MB: megabyte | megabytes | m
        TB: terabyte | terabytes | m
        kW: kilovatio | kilovatios | m
        W: vatio | vatios | m
        kWh: kilovatio hora | kilovatios hora | m
        mAh: miliamperio hora | miliamperios hora | m""",
    "Italian": """
        km: chilometro | chilometri | m
        m: metro | metri | m
        cm: centimetro | centimetri | m
        mm: millimetro | millimetri | m
        kg: chilo | chili | m
        g: grammo | grammi | m
        mg: milligrammo | milligrammi | m
        l L: litro | litri | m
        ml mL: millilitro | millilitri | m
        km/h: chilometro orario | chilometri orari | m
        h: ora | ore | f
        min: minuto | minuti | m
        s: secondo | secondi | m
        °C: grado Celsius | gradi Celsius | m
        °F: grado Fahrenheit | gradi Fahrenheit | m
        GB: gigabyte | gigabyte | m
        MB: megabyte | megabyte | m
        TB: terabyte | terabyte | m
        kW: chilowatt | chilowatt | m
        W: watt | watt | m
        kWh: chilowattora | chilowattora | m
        mAh: milliampere ora | milliampere ora | m""",
    "Portuguese": """
        km: quilómetro | quilómetros | m
        m: metro | metros | m
        cm: centímetro | centímetros | m
        mm: milímetro | milímetros | m
        kg: quilo | quilos | m
        g: grama | gramas | m
        mg: miligrama | miligramas | m
        l L: litro | litros | m
        ml mL: mililitro | mililitros | m
        km/h: quilómetro por hora | quilómetros por hora | m
        h: hora | horas | f
        min: minuto | minutos | m
        s: segundo | segundos | m
        °C: grau Celsius | graus Celsius | m
        °F: grau Fahrenheit | graus Fahrenheit | m
        GB: gigabyte | gigabytes | m
        MB: megabyte | megabytes | m
        TB: terabyte | terabytes | m
        kW: quilowatt | quilowatts | m
        W: watt | watts | m
        kWh: quilowatt-hora | quilowatts-hora | m
        mAh: miliampere-hora | miliamperes-hora | m""",
    "Russian": """
        км km: километр | километра | километров | m
        м m: метр | метра | метров | m
        см cm: сантиметр | сантиметра | сантиметров | m
        мм mm: миллиметр | миллиметра | миллиметров | m
        кг kg: килограмм | килограмма | килограммов | m
        г g: грамм | грамма | граммов | m
        мг mg: миллиграмм | миллиграмма | миллиграммов | m
        л l: литр | литра | литров | m
        мл ml: миллилитр | миллилитра | миллилитров | m
        км/ч km/h: километр в час | километра в час | километров в час | m
        ч h: час | часа | часов | m
        мин min: минута | минуты | минут | f
        сек с s: секунда | секунды | секунд | f
        °C °С: градус Цельсия | градуса Цельсия | градусов Цельсия | m
        ГБ GB: гигабайт | гигабайта | гигабайт | m
        МБ MB: мегабайт | мегабайта | мегабайт | m
        ТБ TB: терабайт | терабайта | терабайт | m
        кВт kW: киловатт | киловатта | киловатт | m
        Вт W: ватт | ватта | ватт | m
        кВт·ч kWh: киловатт-час | киловатт-часа | киловатт-часов | m
        мА·ч mAh: миллиампер-час | миллиампер-часа | миллиампер-часов | m
        млн: миллион | миллиона | миллионов | m
        млрд: миллиард | миллиарда | миллиардов | m
        тыс.: тысяча | тысячи | тысяч | f""",
}
UNITS = {lang: _table(spec) for lang, spec in _UNIT_SPECS.items()}

MONTHS = {
    "German": "Januar Februar März April Mai Juni Juli August September Oktober November Dezember".split(),
    "French": "janvier février mars avril mai juin juillet août septembre octobre novembre décembre".split(),
    "Spanish": "enero febrero marzo abril mayo junio julio agosto septiembre octubre noviembre diciembre".split(),
    "Italian": "gennaio febbraio marzo aprile maggio giugno luglio agosto settembre ottobre novembre dicembre".split(),
    "Portuguese": "janeiro fevereiro março abril maio junho julho agosto setembro outubro novembro dezembro".split(),
    # Genitive: a date says "четырнадцатое марта".
    "Russian": "января февраля марта апреля мая июня июля августа сентября октября ноября декабря".split(),
}
# How a date is said once its numbers are words: {d} day, {m} month name, {y} year.
DATE_FORMAT = {
    "German": "{d} {m} {y}",
    "French": "{d} {m} {y}",
    "Spanish": "{d} de {m} de {y}",
    "Italian": "{d} {m} {y}",
    "Portuguese": "{d} de {m} de {y}",
    "Russian": "{d} {m} {y} года",
}
# Words after which a German ordinal takes the weak "-n" ending ("am dritten", "zum zweiten Mal").
GERMAN_DATIVE_WORDS = frozenset("am im vom zum zur beim dem den des einem einen seit ab".split())
# Russian prepositions that put the number after them in a case ("до пяти", "к пяти", "о пяти").
RUSSIAN_CASE_AFTER = {
    **dict.fromkeys("до от около из без после более менее свыше больше меньше для среди кроме".split(), "genitive"),
    **dict.fromkeys(["к"], "dative"),
    **dict.fromkeys("о об при".split(), "prepositional"),
}
# Words read for phone-number groups and their "+".
PHONE_PLUS = PLUS
