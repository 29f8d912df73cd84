#!/usr/bin/env node
import "../dist/bundle/imginfo.mjs";
