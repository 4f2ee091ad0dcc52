"""Stand-ins for the hands-on tutorial's three downloads (not reachable from here): CSVs with
the columns the tutorial documents, a few hundred anomalies planted among normal rows."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

CATEGORIES = ["grocery", "fuel", "restaurant", "online", "travel", "pharmacy", "gambling"]


def credit_cards(rows: int, rng: np.random.Generator) -> pd.DataFrame:
    day = rng.integers(0, 7, rows)
    df = pd.DataFrame(
        {
            "transaction_id": [f"TX{i:06d}" for i in range(rows)],
            "amount": np.round(rng.lognormal(3.8, 0.9, rows), 2),
            "merchant_category": rng.choice(CATEGORIES[:-1], rows),
            "hour_of_day": rng.integers(7, 23, rows),
            "day_of_week": day,
            "time_since_last": np.round(rng.exponential(18.0, rows) + 0.1, 3),
            "customer_id": [f"CUST_{i:03d}" for i in rng.integers(0, 400, rows)],
            "is_weekend": (day >= 5).astype(int),
        }
    )
    fraud = rng.choice(rows, rows // 50, replace=False)
    df.loc[fraud, "amount"] = np.round(rng.uniform(1500, 9000, len(fraud)), 2)
    df.loc[fraud, "hour_of_day"] = rng.integers(0, 5, len(fraud))
    df.loc[fraud, "time_since_last"] = 0.01
    df.loc[fraud, "merchant_category"] = "gambling"
    return df


def sensors(rows: int, rng: np.random.Generator) -> pd.DataFrame:
    t = np.arange(rows)
    daily = np.sin(2 * np.pi * t / 1440)
    df = pd.DataFrame(
        {
            "timestamp": pd.date_range("2024-01-15", periods=rows, freq="1min").astype(str),
            "temperature": 85 + 3 * daily + rng.normal(0, 0.5, rows),
            "pressure": 14.7 + rng.normal(0, 0.1, rows),
            "vibration": 0.15 + 0.02 * daily + rng.normal(0, 0.01, rows),
            "power_consumption": 450 + 10 * daily + rng.normal(0, 3, rows),
            "production_rate": 98 + rng.normal(0, 0.5, rows),
        }
    )
    for start in rng.choice(np.arange(50, rows - 30), 4, replace=False):
        span = slice(int(start), int(start) + 20)
        df.loc[span, "temperature"] += 15
        df.loc[span, "vibration"] += 0.35
        df.loc[span, "production_rate"] -= 20
    return df


def network_logs(rows: int, rng: np.random.Generator) -> pd.DataFrame:
    seconds = np.sort(rng.integers(0, 3 * 86400, rows))
    df = pd.DataFrame(
        {
            "timestamp": (pd.Timestamp("2024-01-15") + pd.to_timedelta(seconds, "s")).astype(str),
            "src_ip": [f"192.168.1.{i}" for i in rng.integers(2, 200, rows)],
            "dst_ip": [f"10.0.0.{i}" for i in rng.integers(2, 60, rows)],
            "dst_port": rng.choice(
                [80, 443, 22, 53, 8080, 3389], rows, p=[0.3, 0.4, 0.1, 0.1, 0.05, 0.05]
            ),
            "protocol": rng.choice(["TCP", "UDP", "ICMP"], rows, p=[0.8, 0.15, 0.05]),
            "duration": np.round(rng.exponential(30.0, rows), 2),
            "bytes": rng.lognormal(8, 1.2, rows).astype(int),
            "packets": rng.integers(1, 200, rows),
        }
    )
    attack = rng.choice(rows, rows // 100, replace=False)
    df.loc[attack, "src_ip"] = "203.0.113.45"
    df.loc[attack, "dst_port"] = 22
    df.loc[attack, "duration"] = 0.5
    df.loc[attack, "bytes"] = rng.integers(40_000_000, 60_000_000, len(attack))
    return df


def write_all(folder: Path, seed: int = 7) -> None:
    """The three files, named as the tutorial downloads them."""
    rng = np.random.default_rng(seed)
    credit_cards(3000, rng).to_csv(folder / "credit_card_sample.csv", index=False)
    sensors(1500, rng).to_csv(folder / "sensor_data_sample.csv", index=False)
    network_logs(2000, rng).to_csv(folder / "network_logs_sample.csv", index=False)
