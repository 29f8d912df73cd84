#!/usr/bin/env node
import "../dist/src/cli/imginfo.js";
