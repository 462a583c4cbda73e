"""Write the project's sample corpus: raw Chinese and English sentences from a small grammar.

    python data/make_corpus.py            # writes data/corpus/{train,heldout}.{zh,en}.txt

Deterministic (seeded). The Chinese text is unsegmented, as users have it; ``python cli.py
vocab`` segments it with jieba and ``data/user_dict.txt``. The grammar puts 苹果 in fruit
contexts (我买了六斤苹果。) and phone contexts (我买了一个苹果7。), and "bank" in money and
river contexts, so the default model shows how context changes the vectors.
"""

from __future__ import annotations

import random
from pathlib import Path

OUT = Path(__file__).resolve().parent / "corpus"
N_TRAIN, N_HELDOUT = 2500, 250  # sentences per language

ZH = {
    "人": ["我", "你", "他", "她", "我们", "他们", "妈妈", "爸爸", "奶奶", "老师", "同事", "小王", "小李", "张阿姨", "我的朋友", "邻居"],
    "时间": ["昨天", "今天", "上午", "下午", "晚上", "周末", "刚才", "前天", "上个月", "去年"],
    "商店": ["超市", "菜市场", "水果店", "小区门口的摊位", "网上"],
    "手机店": ["手机店", "商场", "网上", "专卖店"],
    "斤": ["一斤", "两斤", "三斤", "五斤", "六斤", "十斤", "半斤"],
    "水果": ["苹果", "苹果", "苹果", "香蕉", "橘子", "葡萄", "梨", "西瓜", "草莓", "桃子"],
    "品牌": ["苹果", "苹果", "苹果", "华为", "小米", "三星"],
    "型号": ["7", "8", "11", "12", "13", "14", "15"],
    "个": ["一个", "一部", "一台", "新的"],
    "味道": ["又甜又脆", "有点酸", "特别新鲜", "水分很多", "味道一般"],
    "地区": ["山东", "陕西", "新疆", "云南", "海南", "甘肃"],
    "城市": ["北京", "上海", "广州", "深圳", "杭州", "成都", "西安", "南京"],
    "天气": ["下雨", "下雪", "刮大风", "天气很好", "特别热", "有点冷"],
    "活动": ["看书", "做饭", "写作业", "打扫房间", "看电影", "休息", "学习中文", "听音乐"],
    "地方": ["图书馆", "公园", "办公室", "咖啡馆", "教室", "家里"],
    "形容": ["有意思", "无聊", "难懂", "感人", "好看"],
    "数": ["两", "三", "四", "五", "六"],
    "问题": ["屏幕摔碎了", "电池不耐用", "经常死机", "充电很慢", "信号不好"],
}
ZH_TEMPLATES = [
    # 苹果 and other fruit
    "{人}买了{斤}{水果}。", "{人}{时间}在{商店}买了{斤}{水果}。", "{人}买了{斤}{水果}，{味道}。",
    "这些{水果}是从{地区}运来的，{味道}。", "{人}把{水果}洗干净，切成小块放在盘子里。",
    "{人}每天早上吃一个{水果}。", "{水果}{味道}，{人}一口气吃了{数}个。", "{人}用{水果}做了一杯果汁。",
    "{地区}的{水果}很有名。", "{斤}{水果}多少钱？", "{人}削了一个{水果}给孩子吃。",
    "{人}说{水果}放在冰箱里可以保存很久。", "秋天是吃{水果}的好季节。",
    # 苹果 and other phone brands
    "{人}买了{个}{品牌}{型号}。", "{人}{时间}在{手机店}买了{个}{品牌}{型号}。",
    "{人}的{品牌}{型号}{问题}，只好拿去修。", "{品牌}手机{问题}，{人}想换一个。",
    "{品牌}公司{时间}发布了新款手机。", "新款{品牌}手机比去年贵了不少。",
    "{人}用{品牌}{型号}拍了很多照片。", "{人}把旧的{品牌}手机送给了{人}。",
    "{品牌}{型号}的系统更新以后{问题}。",
    # everyday
    "{时间}{天气}，{人}决定在家{活动}。", "{人}{时间}去{城市}出差了。", "{人}正在{地方}{活动}。",
    "{人}觉得这本书很{形容}。", "{人}和{人}约好{时间}在{地方}见面。", "{城市}{时间}{天气}。",
    "{人}在{城市}住了{数}年。", "{人}{时间}在{地方}{活动}，没有出门。",
]

EN = {
    "person": ["I", "You", "He", "She", "We", "They", "My mother", "My father", "The teacher", "Tom",
               "Anna", "Our neighbour", "My friend", "The old man", "A student"],
    "time": ["yesterday", "today", "this morning", "last night", "on Sunday", "last week", "in the afternoon"],
    "money_verb": ["deposit", "withdraw", "borrow", "exchange"],
    "amount": ["some", "a little", "a lot of", "two hundred dollars of", "fifty euros of"],
    "river": ["river", "lake", "canal", "stream"],
    "river_act": ["watched the boats", "had a picnic", "read a book", "went fishing", "fell asleep"],
    "fruit": ["apples", "bananas", "oranges", "grapes", "pears", "strawberries"],
    "qty": ["two kilos of", "a bag of", "six", "a box of", "some"],
    "city": ["London", "Paris", "Berlin", "Boston", "Madrid", "Tokyo"],
    "weather": ["raining", "snowing", "very windy", "sunny", "cold"],
    "activity": ["read a book", "cook dinner", "clean the house", "watch a film", "study for the exam", "write letters"],
    "place": ["the library", "the park", "the office", "a small cafe", "the kitchen", "the station"],
    "adj": ["interesting", "boring", "difficult", "moving", "funny"],
    "num": ["two", "three", "four", "five", "ten"],
}
EN_TEMPLATES = [
    # bank: money
    "{person} went to the bank to {money_verb} {amount} money.", "The bank raised its interest rates {time}.",
    "{person} opened an account at the bank {time}.", "The bank refused to lend {person} the money.",
    "{person} works at a bank in {city}.", "The bank closes at five on weekdays.",
    "{person} asked the bank for a loan to buy a house.",
    # bank: river
    "{person} sat on the bank of the {river} and {river_act}.", "We walked along the {river} bank {time}.",
    "The boat drifted slowly towards the bank.", "Tall trees grow on the far bank of the {river}.",
    "{person} climbed up the muddy bank after the rain.", "Children played on the grassy bank of the {river}.",
    # everyday
    "{person} bought {qty} {fruit} at the market {time}.", "{person} ate {num} {fruit} after lunch.",
    "It was {weather} {time}, so {person} stayed at home to {activity}.", "{person} flew to {city} {time}.",
    "{person} is waiting for us at {place}.", "{person} thought the book was {adj}.",
    "{person} met an old friend at {place} {time}.", "{person} lived in {city} for {num} years.",
    "Could you help me {activity} {time}?", "{person} wanted to {activity}, but it was {weather}.",
]


def fill(template: str, slots: dict[str, list[str]], rng: random.Random) -> str:
    out = template
    while "{" in out:
        start = out.index("{")
        end = out.index("}", start)
        value = rng.choice(slots[out[start + 1 : end]])
        if start > 0 and value.split()[0] in ("The", "My", "Our", "A"):
            value = value[0].lower() + value[1:]  # mid-sentence
        out = out[:start] + value + out[end + 1 :]
    return out[0].upper() + out[1:]


def sentences(templates: list[str], slots: dict[str, list[str]], n: int, rng: random.Random,
              exclude: set[str] = frozenset()) -> list[str]:
    out: list[str] = []
    while len(out) < n:
        s = fill(rng.choice(templates), slots, rng)
        if s not in exclude:
            out.append(s)
    return out


def main() -> None:
    OUT.mkdir(exist_ok=True)
    rng = random.Random(20240604)
    for lang, templates, slots in (("zh", ZH_TEMPLATES, ZH), ("en", EN_TEMPLATES, EN)):
        train = sentences(templates, slots, N_TRAIN, rng)
        heldout = sentences(templates, slots, N_HELDOUT, rng, exclude=set(train))  # unseen sentences
        for split, lines in (("train", train), ("heldout", heldout)):
            (OUT / f"{split}.{lang}.txt").write_text("\n".join(lines) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
