//! The GEMM design's job model (`hdl/gemm_accel/job-model.toml`) agrees with the register map's
//! one definition (gemm-abi): every register of the map has exactly one class in the model, the
//! doorbell, status and error bits and codes are the map's, and each class fits the register's
//! access (the VM writes context and local registers; it only reads results and pass-through ones).

use std::path::Path;

use cosim_gemm_abi::{ctrl, regs, status, Access, ErrorCode};
use cosim_mediator::model::RegClass;
use cosim_mediator::JobModel;

fn model() -> JobModel {
    JobModel::load(&Path::new(env!("CARGO_MANIFEST_DIR")).join("../hdl/gemm_accel/job-model.toml"))
        .expect("GEMM job model")
}

#[test]
fn bits_codes_and_special_registers_are_the_register_maps() {
    let m = model();
    assert_eq!(
        (m.doorbell.offset, m.doorbell.start, m.doorbell.irq_enable, m.doorbell.clear),
        (regs::CTRL, ctrl::START, ctrl::IRQ_EN, ctrl::CLEAR)
    );
    assert_eq!(
        (m.status.offset, m.status.busy, m.status.done, m.status.error),
        (regs::STATUS, status::BUSY, status::DONE, status::ERROR)
    );
    assert_eq!(
        (m.error.offset, m.error.busy_code, m.error.lost_code),
        (regs::ERROR, ErrorCode::Busy.code(), ErrorCode::DmaError.code())
    );
    assert_eq!(m.priority.as_ref().map(|p| p.offset), Some(regs::JOB_PRIORITY));
    assert_eq!(m.interrupt.as_ref().and_then(|i| i.vector_register), Some(regs::MSIX_VECTOR));
    assert_eq!(m.jobs_counter, Some(regs::JOBS_DONE));
    let c = m.counters.as_ref().expect("counters");
    assert_eq!((c.busy, c.idle), (regs::BUSY_CYCLES_LO, regs::IDLE_CYCLES_LO));
    assert_eq!((m.report.cycles, m.report.dma_wait), (Some(regs::CYCLES_LO), Some(regs::DMA_WAIT_LO)));
    assert_eq!(m.bar_size, cosim_gemm_abi::pci::BAR0_SIZE);
}

#[test]
fn every_register_of_the_map_has_a_class_that_fits_its_access() {
    let m = model();
    let classes = m.classes().expect("valid");
    for r in regs::REGISTERS {
        let Some(class) = classes.get(&r.offset) else {
            panic!("register {} ({:#x}) of the map is not named in job-model.toml", r.name, r.offset);
        };
        let fits = match r.access {
            Access::WriteOnly => class == &RegClass::Doorbell,
            Access::ReadWrite => {
                matches!(class, RegClass::Context | RegClass::Local | RegClass::Priority | RegClass::PassWrite)
            }
            Access::ReadOnly => matches!(
                class,
                RegClass::Status
                    | RegClass::Error
                    | RegClass::Result
                    | RegClass::JobsCounter
                    | RegClass::PassRead
                    | RegClass::Constant
            ),
        };
        assert!(fits, "register {} ({:#x}, {:?}) has class {class:?} in job-model.toml", r.name, r.offset, r.access);
    }
    for off in classes.keys() {
        assert!(
            regs::REGISTERS.iter().any(|r| r.offset == *off),
            "job-model.toml names {off:#x}, which the map does not have"
        );
    }
}
