#!/usr/bin/env python3
"""A real Modbus TCP server (pymodbus) holding known values, for the bridge's system tests.

    python3 server.py --port PORT --spec SPEC.json           # Modbus TCP on 127.0.0.1:PORT
    python3 server.py --serial /dev/pts/N --parity N --spec SPEC.json   # Modbus RTU, 19200 8N1

SPEC is a JSON list of values to place, each encoded here, independently of the bridge:
    {"function": "holding"|"input"|"coil"|"discrete", "address": N,
     "type": "u16"|"i16"|"u32"|"i32"|"u64"|"f32"|"f64"|"bits",
     "order": "ABCD"|"CDAB"|"BADC"|"DCBA", "value": number, "bits": [n, ...]}
"bits" sets those bits (0 = least significant) of one register; coils and discrete
inputs take "value" true/false; "unit" (default 1) picks the unit id that holds it.
Prints "ready" once it listens.
"""
import argparse
import asyncio
import json
import logging
import struct

from pymodbus.datastore import (
    ModbusDeviceContext,
    ModbusSequentialDataBlock,
    ModbusServerContext,
)
from pymodbus import FramerType
from pymodbus.server import ModbusSerialServer, ModbusTcpServer

SIZE = 1024
FORMATS = {"u16": ">H", "i16": ">h", "u32": ">I", "i32": ">i", "u64": ">Q", "f32": ">f", "f64": ">d"}


def words(kind, order, value):
    """Big-endian bytes of the value, then rearranged into the wire order."""
    fmt = FORMATS[kind]
    if fmt[1] in "HhIiQ":
        value = int(value)
    raw = struct.pack(fmt, value)  # A B C D …
    regs = [raw[i:i + 2] for i in range(0, len(raw), 2)]
    if order in ("BADC", "DCBA"):
        regs = [r[::-1] for r in regs]
    if order in ("CDAB", "DCBA"):
        regs = regs[::-1]
    return [int.from_bytes(r, "big") for r in regs]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--port", type=int)
    ap.add_argument("--serial")
    ap.add_argument("--parity", default="E", choices=["E", "O", "N"])
    ap.add_argument("--spec", required=True)
    args = ap.parse_args()
    with open(args.spec, encoding="utf-8") as f:
        spec = json.load(f)
    units = {}
    for item in spec:
        tables = units.setdefault(item.get("unit", 1), {
            "holding": [0] * SIZE, "input": [0] * SIZE,
            "coil": [False] * SIZE, "discrete": [False] * SIZE,
        })
        table = tables[item["function"]]
        addr = item["address"]
        if item["function"] in ("coil", "discrete"):
            table[addr] = bool(item["value"])
        elif item.get("type") == "bits":
            for b in item["bits"]:
                table[addr] |= 1 << b
        else:
            for i, w in enumerate(words(item["type"], item.get("order", "ABCD"), item["value"])):
                table[addr + i] = w
    # pymodbus' device context maps protocol address N to block address N + 1
    devices = {
        unit: ModbusDeviceContext(
            hr=ModbusSequentialDataBlock(1, tables["holding"]),
            ir=ModbusSequentialDataBlock(1, tables["input"]),
            co=ModbusSequentialDataBlock(1, tables["coil"]),
            di=ModbusSequentialDataBlock(1, tables["discrete"]),
        )
        for unit, tables in units.items()
    }
    context = ModbusServerContext(devices=devices)
    logging.basicConfig(level=logging.ERROR)

    async def run():
        if args.serial:
            server = ModbusSerialServer(
                context, framer=FramerType.RTU, port=args.serial,
                baudrate=19200, bytesize=8, parity=args.parity, stopbits=1,
            )
        else:
            server = ModbusTcpServer(context, address=("127.0.0.1", args.port))
        asyncio.get_running_loop().call_later(0.2, lambda: print("ready", flush=True))
        await server.serve_forever()

    asyncio.run(run())


if __name__ == "__main__":
    main()
