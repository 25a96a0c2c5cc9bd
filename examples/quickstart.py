"""Quickstart: a few partition definitions, as a Dagster user would write them, and their keys."""

from datetime import datetime

import nb_backfill as nbb

now = datetime(2024, 12, 31, 12, 0)

daily = nbb.DailyPartitionsDefinition(start_date="2024-01-01", timezone="America/New_York")
print(f"daily since 2024-01-01 (New York): {daily.get_num_partitions(now)} partitions, "
      f"{daily.get_first_partition_key(now)} .. {daily.get_last_partition_key(now)}")

hourly = nbb.HourlyPartitionsDefinition("2024-11-03-00:00", end_date="2024-11-03-04:00", timezone="America/New_York")
print("hourly across the fall-back hour:", hourly.get_partition_keys(now))

multi = nbb.MultiPartitionsDefinition(
    {"date": nbb.DailyPartitionsDefinition("2024-01-01", end_date="2024-01-03"),
     "region": nbb.StaticPartitionsDefinition(["eu", "us"])}
)
print("multi (date x region):", multi.get_partition_keys(now))

print("selected:", nbb.select_partitions(daily, from_="2024-03-09", to="2024-03-11", current_time=now))
try:
    nbb.select_partitions(daily, "2024/03/10", current_time=now)
except nbb.SelectionError as error:
    print("error:", error)
